"""Near-copies: the same photo re-encoded or resized, or the next frame of a burst.

Each image gets a 64-bit perceptual hash (imagehash's pHash: the signs of the low frequencies of
its DCT at 32x32 grey), and two images whose hashes differ in at most ``NEAR_DISTANCE`` bits are
near-copies. Groups are the connected sets of near-copy pairs and byte-identical files, so every
member of a group can be kept in one split.
"""
import imagehash
import numpy as np

NEAR_DISTANCE = 6  # bits of 64 (hashes differ in an even number); chosen by looking at the real images (RESULTS.md)
BLOCK = 512  # rows of the pairwise distance matrix computed at once (BLOCK x N uint64)


def perceptual_hash(image):
    """The 64-bit pHash of a PIL image as a Python int."""
    bits = imagehash.phash(image).hash.flatten()
    return int(np.packbits(bits).view(">u8")[0])


def near_pairs(hashes, distance=NEAR_DISTANCE):
    """Index pairs (i, j), i < j, whose hashes differ in at most ``distance`` bits, with the distance."""
    values = np.asarray(hashes, dtype=np.uint64)
    pairs = []
    for start in range(0, len(values), BLOCK):
        block = values[start:start + BLOCK, None] ^ values[None, :]
        rows, columns = np.nonzero(np.bitwise_count(block) <= distance)
        keep = columns > rows + start
        bits = np.bitwise_count(block[rows[keep], columns[keep]])
        pairs += zip((rows[keep] + start).tolist(), columns[keep].tolist(), bits.tolist())
    return pairs


def connected_groups(count, links):
    """The connected components of ``count`` items joined by ``links`` (index pairs), as sorted
    lists of indices, each component once, in the order of its smallest index."""
    parent = list(range(count))

    def root(i):
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i
    for a, b in links:
        parent[max(root(a), root(b))] = min(root(a), root(b))
    groups = {}
    for i in range(count):
        groups.setdefault(root(i), []).append(i)
    return list(groups.values())
