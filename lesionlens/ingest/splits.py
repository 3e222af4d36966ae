"""Near-duplicate grouping and deterministic, class-stratified split assignment."""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass

import numpy as np

SPLITS = ("train", "eval", "test")


@dataclass(frozen=True)
class Item:
    image_id: str
    label: int
    phash: str  # 64-bit perceptual hash, hex


def _popcount64(x: np.ndarray) -> np.ndarray:
    return np.unpackbits(x.view(np.uint8).reshape(*x.shape, 8), axis=-1).sum(axis=-1)


def near_duplicate_groups(items: list[Item], max_distance: int) -> dict[str, str]:
    """Union-find over pairs whose perceptual hashes differ in <= max_distance bits.

    Returns image_id -> group_id, where group_id is the smallest image_id of the group (stable
    across runs). O(n^2 / 2) hash comparisons, vectorised in blocks: ~1 s for 10k images.
    """
    ids = sorted(it.image_id for it in items)
    by_id = {it.image_id: it for it in items}
    hashes = np.array([int(by_id[i].phash, 16) for i in ids], dtype=np.uint64)
    parent = list(range(len(ids)))

    def find(a: int) -> int:
        while parent[a] != a:
            parent[a] = parent[parent[a]]
            a = parent[a]
        return a

    block = 1024
    for start in range(0, len(ids), block):
        rows = hashes[start : start + block]
        dist = _popcount64(rows[:, None] ^ hashes[None, :])
        for r, c in zip(*np.nonzero(dist <= max_distance), strict=False):
            i, j = start + int(r), int(c)
            if i < j:
                ri, rj = find(i), find(j)
                if ri != rj:
                    parent[max(ri, rj)] = min(ri, rj)
    return {ids[i]: ids[find(i)] for i in range(len(ids))}


def group_members(items: list[Item], groups: dict[str, str]) -> dict[str, list[Item]]:
    members: dict[str, list[Item]] = defaultdict(list)
    for it in items:
        members[groups[it.image_id]].append(it)
    return members


def _targets(n: int, fractions: tuple[float, ...]) -> list[int]:
    counts = [round(n * f) for f in fractions[:-1]]
    return [*counts, n - sum(counts)]


def paper_split(items: list[Item], fractions: tuple[float, ...], seed: int) -> dict[str, str]:
    """The paper's protocol: shuffle each class with the seed and cut at 70/15/15."""
    out: dict[str, str] = {}
    by_label: dict[int, list[str]] = defaultdict(list)
    for it in items:
        by_label[it.label].append(it.image_id)
    for label, ids in sorted(by_label.items()):
        ids = sorted(ids)
        order = np.random.default_rng([seed, label]).permutation(len(ids))
        bounds = np.cumsum(_targets(len(ids), fractions))
        for rank, idx in enumerate(order):
            out[ids[idx]] = SPLITS[int(np.searchsorted(bounds, rank, side="right"))]
    return out


def grouped_split(
    items: list[Item], groups: dict[str, str], fractions: tuple[float, ...], seed: int
) -> dict[str, str]:
    """Whole near-duplicate groups go to one split; per class, each group (largest first) goes
    to the split furthest below its target count, so class fractions stay close to target."""
    members = group_members(items, groups)
    by_label: dict[int, list[str]] = defaultdict(list)
    for gid, its in members.items():
        majority = min(Counter(i.label for i in its).most_common(), key=lambda kv: (-kv[1], kv[0]))
        by_label[majority[0]].append(gid)
    out: dict[str, str] = {}
    for label, gids in sorted(by_label.items()):
        gids = sorted(gids)
        rng = np.random.default_rng([seed, label])
        gids = [gids[i] for i in rng.permutation(len(gids))]
        gids.sort(key=lambda g: -len(members[g]))  # stable: shuffled order among equal sizes
        total = sum(len(members[g]) for g in gids)
        target = np.array(fractions) * total
        have = np.zeros(len(SPLITS))
        for g in gids:
            s = int(np.argmax(target - have))
            have[s] += len(members[g])
            for it in members[g]:
                out[it.image_id] = SPLITS[s]
    return out


def label_conflicts(items: list[Item], groups: dict[str, str]) -> list[dict]:
    """Near-duplicate groups whose members carry different labels (same picture, two classes)."""
    members = group_members(items, groups)
    return [
        {"group_id": gid, "members": {i.image_id: i.label for i in its}}
        for gid, its in sorted(members.items())
        if len({i.label for i in its}) > 1
    ]
