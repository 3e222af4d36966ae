"""Near-duplicate grouping and deterministic, class-stratified split assignment."""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass

import numpy as np

from modules.contract import SPLITS, TRAIN


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


def _largest_remainder(counts: np.ndarray, n: int) -> np.ndarray:
    """Split n draws over classes in proportion to counts: floors, then the leftover draws to
    the largest fractional parts (ties to the lower class index). scikit-learn's stratified
    splitters allocate the same way (they break exact ties at random)."""
    quota = counts * n / counts.sum()
    out = np.floor(quota).astype(int)
    for i in np.argsort(-(quota - out), kind="stable")[: n - out.sum()]:
        out[i] += 1
    return out


def _ceil(x: float) -> int:
    return int(np.ceil(round(x, 9)))  # 0.3 * 40 is 12.000000000000002 in floating point


def paper_split(items: list[Item], fractions: tuple[float, ...], seed: int) -> dict[str, str]:
    """The paper's protocol: a stratified 70 / 30 split, then the 30 halved, stratified again
    (scikit-learn's ``train_test_split`` twice). Counts follow its rounding: the held-out part
    is ceil(30 %) of all images and eval gets the larger half, which gives BUSI's 452 / 98 / 97
    exactly. Within a class, images are shuffled with the seed."""
    by_label: dict[int, list[str]] = defaultdict(list)
    for it in items:
        by_label[it.label].append(it.image_id)
    labels = sorted(by_label)
    counts = np.array([len(by_label[lab]) for lab in labels])
    f_train, f_eval, f_test = fractions
    n_held = _ceil(counts.sum() * (1 - f_train))
    train = _largest_remainder(counts, counts.sum() - n_held)
    held = counts - train
    n_eval = _ceil(n_held * f_eval / (f_eval + f_test)) if n_held else 0
    evals = _largest_remainder(held, n_eval) if n_held else held
    out: dict[str, str] = {}
    for label, n_train, n_ev in zip(labels, train, evals, strict=True):
        ids = sorted(by_label[label])
        order = np.random.default_rng([seed, label]).permutation(len(ids))
        for rank, idx in enumerate(order):
            split = 0 if rank < n_train else 1 if rank < n_train + n_ev else 2
            out[ids[idx]] = SPLITS[split]
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


def leakage(assignment: dict[str, str], groups: dict[str, str]) -> dict[str, int]:
    """How far near-duplicates cross splits: an eval/test image whose twin is in train is
    partly scored on data the model saw. Zero under the grouped protocol by construction."""
    splits_of: dict[str, set[str]] = defaultdict(set)
    for image_id, split in assignment.items():
        splits_of[groups[image_id]].add(split)
    out = {"groups_spanning_splits": sum(len(s) > 1 for s in splits_of.values())}
    for held in SPLITS[1:]:
        out[f"{held}_with_duplicate_in_train"] = sum(
            split == held and TRAIN in splits_of[groups[i]] for i, split in assignment.items()
        )
    return out


def label_conflicts(items: list[Item], groups: dict[str, str]) -> list[dict]:
    """Near-duplicate groups whose members carry different labels (same picture, two classes)."""
    members = group_members(items, groups)
    return [
        {"group_id": gid, "members": {i.image_id: i.label for i in its}}
        for gid, its in sorted(members.items())
        if len({i.label for i in its}) > 1
    ]
