"""The speed-ups of a training and evaluation step, in one place, applied by ``apply``; feature
maps, Grad-CAM and the ONNX export see torchvision's model as it is.

Only what ``bench.py --ablate=true`` measured to pay stays (RESULTS.md, "CPU speed-ups, one by
one"): the stem's ReLU after its max-pool, in float32 on a CPU. The matmul form of layer4's
convolutions (bf16) and glibc keeping freed memory were taken out: on the 2-core AMD EPYC with
AVX-512 BF16 the first cost 3-4% of a step and the second saved under 3%.
"""
import torch
import torchvision

SPEEDUPS = ("relu_after_pool",)


class PoolFirstResNet(torchvision.models.ResNet):
    """torchvision's ResNet with the stem's ReLU after its max-pool: the same modules, names and
    state dict, and the same function and gradients (ReLU and max commute), with the ReLU on a
    quarter of the pixels. A hook on ``relu`` sees its output at the pooled size."""

    def _forward_impl(self, x):
        x = self.relu(self.maxpool(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(torch.flatten(self.avgpool(x), 1))


def relu_after_pool(model):
    """Move a torchvision ResNet's stem ReLU after its max-pool, in place (other models stay)."""
    if type(model) is torchvision.models.ResNet:
        model.__class__ = PoolFirstResNet
    return model


def applies(rt):
    """The speed-ups that pay where ``rt`` runs: the ReLU move in float32 on a CPU (in bf16 it saved
    nothing)."""
    return SPEEDUPS if rt.device.type == "cpu" and not rt.bf16 else ()


def apply(model, rt, skip=()):
    """The model with the speed-ups that pay where ``rt`` runs, except those named in ``skip``."""
    if "relu_after_pool" in applies(rt) and "relu_after_pool" not in skip:
        model = relu_after_pool(model)
    return model
