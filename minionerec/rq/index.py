"""Shared by every quantiser: make SIDs unique, print the report, write `<Category>.index.json`.

Codes are integer arrays `[N, L]` (item x level). Level l is written as the token `<{letter}_{code}>`
with letters a, b, c, ... so `[12, 40, 7]` becomes `["<a_12>", "<b_40>", "<c_7>"]`.

Collision policy (see minionerec/rq/README.md): two items must never share a SID and all SIDs have the same
length. Two modes:

- `reassign` (default): items that share the first L-1 codes ("prefix group") and collide on the
  last code are re-assigned *within that last level*. For each prefix group that contains a
  collision we solve a linear assignment (Hungarian, scipy) of the group's items to distinct
  last-level codewords, minimising the summed squared distance between each item's last-level
  residual and its codeword. Groups without a collision keep their codes untouched; SIDs keep
  L tokens. A group larger than the last codebook spills its left-over items to the nearest free
  (level L-1, level L) code pair; only if even that runs out is it a one-line error.
- `append`: every item gets one extra level holding its rank among the items sharing its full
  L-level code (0 for the first, 1, 2, ...), so all SIDs grow to L+1 tokens and no semantic code
  changes. This is what upstream TIGER-style pipelines do.
"""
from __future__ import annotations

import contextlib
import json
import math
import re
import zipfile
from collections import defaultdict
from pathlib import Path

import numpy as np
from scipy.optimize import linear_sum_assignment

from minionerec.run.atomic import atomic_path
from minionerec.run.file_lock import locked
from minionerec.rq.common import reason

LEVEL_LETTERS = "abcdefghijklmnopqrstuvwxyz"
COLLISION_MODES = ("reassign", "append")


class CollisionError(ValueError):
    """SIDs cannot be made unique under the chosen collision mode."""


def level_token(level: int, code: int) -> str:
    if not 0 <= level < len(LEVEL_LETTERS):
        raise ValueError(f"level {level}: at most {len(LEVEL_LETTERS)} levels (a..z) are supported")
    return f"<{LEVEL_LETTERS[level]}_{int(code)}>"


def codes_to_sids(codes: np.ndarray) -> list[list[str]]:
    """[N, L] ints -> N lists of L tokens."""
    return [[level_token(level, c) for level, c in enumerate(row)] for row in np.asarray(codes).tolist()]


def sids_to_codes(sids: list[list[str]]) -> np.ndarray:
    """Inverse of codes_to_sids (level order must be a, b, c, ...); [N, L] int64."""
    rows = []
    for sid in sids:
        row = []
        for level, token in enumerate(sid):
            letter, _, code = token.strip("<>").partition("_")
            if letter != LEVEL_LETTERS[level] or not code.isdigit():
                raise ValueError(f"token {token!r} is not a level-{LEVEL_LETTERS[level]} SID token like <a_12>")
            row.append(int(code))
        rows.append(row)
    return np.asarray(rows, dtype=np.int64)


def collision_groups(codes: np.ndarray) -> list[list[int]]:
    """Row indices of every group of >= 2 items sharing the same full code."""
    groups = defaultdict(list)
    for i, row in enumerate(map(tuple, np.asarray(codes).tolist())):
        groups[row].append(i)
    return [g for g in groups.values() if len(g) > 1]


def _sq_dist(x: np.ndarray, codebook: np.ndarray) -> np.ndarray:
    """x [n, D], codebook [K, D] -> squared distances [n, K]."""
    return (x * x).sum(1)[:, None] - 2 * x @ codebook.T + (codebook * codebook).sum(1)[None, :]


def reassign(codes: np.ndarray, residuals: list[np.ndarray], codebooks: list[np.ndarray]) -> np.ndarray:
    """Distinct full codes, changing as little as possible (min total squared distance).

    codes [N, L]; residuals L x [N, D] (what each level quantised); codebooks L x [K_l, D]. Only the
    last two levels are read. Step 1: inside each colliding prefix group (same first L-1 codes) a
    Hungarian assignment gives distinct last codes. Step 2 ("spill"): if a group has more items than
    the last codebook has codes, the items left over get the free (level L-1, level L) pair nearest to
    their level L-1 residual, among pairs unused by the items sharing their first L-2 codes.
    """
    codes = np.array(codes, dtype=np.int64, copy=True)
    residuals = [np.asarray(r, dtype=np.float64) for r in residuals[-2:]]
    codebooks = [np.asarray(c, dtype=np.float64) for c in codebooks[-2:]]
    if any(len(r) != len(codes) for r in residuals):
        raise ValueError(f"residuals must have {len(codes)} rows, one per item")
    groups = defaultdict(list)
    for i, row in enumerate(map(tuple, codes[:, :-1].tolist())):
        groups[row].append(i)
    overflow = []
    for members in groups.values():
        if len(set(codes[members, -1].tolist())) == len(members):
            continue  # no collision in this group: keep the quantiser's choice
        members = np.asarray(members)
        rows, cols = linear_sum_assignment(_sq_dist(residuals[-1][members], codebooks[-1]))  # [n_group, K]
        codes[members[rows], -1] = cols
        overflow.extend(np.setdiff1d(members, members[rows]).tolist())  # n_group > K: these got no code
    if overflow:
        _spill(codes, overflow, residuals, codebooks)
    return codes


def _spill(codes: np.ndarray, overflow: list[int], residuals, codebooks) -> None:
    """Give each overflow item a free (second-to-last, last) code pair; in place."""
    if codes.shape[1] < 2:
        raise CollisionError(f"{len(codes)} items but the only level has {len(codebooks[-1])} codes")
    cb_b, cb_c = codebooks  # [K_b, D], [K_c, D]
    pair_norm = ((cb_b[:, None, :] + cb_c[None, :, :]) ** 2).sum(-1)  # ||e_b + e_c||^2, [K_b, K_c]
    by_prefix = defaultdict(list)
    for i in overflow:
        by_prefix[tuple(codes[i, :-2].tolist())].append(i)
    waiting = set(overflow)
    for prefix, items in by_prefix.items():
        same = [j for j in np.flatnonzero((codes[:, :-2] == prefix).all(1)) if j not in waiting]
        used = np.zeros(pair_norm.shape, dtype=bool)
        used[codes[same, -2], codes[same, -1]] = True
        free = np.flatnonzero(~used.ravel())  # flat (b, c) pair ids
        if len(free) < len(items):
            raise CollisionError(f"{len(items) + len(same)} items share the prefix {list(prefix)}, more than the "
                                 "last two levels can tell apart; use larger codebooks or --collision append")
        r = residuals[0][items]  # [n, D], the input of level L-1
        cost = (-2 * (r @ cb_b.T)[:, :, None] - 2 * (r @ cb_c.T)[:, None, :] + pair_norm).reshape(len(items), -1)
        rows, cols = linear_sum_assignment(cost[:, free])  # ||r||^2 is constant per row, left out
        b, c = np.unravel_index(free[cols], pair_norm.shape)
        codes[np.asarray(items)[rows], -2], codes[np.asarray(items)[rows], -1] = b, c


def append_level(codes: np.ndarray) -> np.ndarray:
    """[N, L] -> [N, L+1]: the new level numbers the items sharing a full code 0, 1, 2, ..."""
    seen: dict[tuple, int] = defaultdict(int)
    extra = np.zeros(len(codes), dtype=np.int64)
    for i, row in enumerate(map(tuple, np.asarray(codes).tolist())):
        extra[i] = seen[row]
        seen[row] += 1
    return np.concatenate([np.asarray(codes, dtype=np.int64), extra[:, None]], axis=1)


def make_unique(codes: np.ndarray, mode: str = "reassign", residuals: list[np.ndarray] | None = None,
                codebooks: list[np.ndarray] | None = None) -> np.ndarray:
    """Collision-free, fixed-length codes under `mode` (see module docstring).

    residuals L x [N, D] and codebooks L x [K_l, D] (reassign only) come from the quantiser.
    """
    if mode not in COLLISION_MODES:
        raise ValueError(f"collision mode must be one of {COLLISION_MODES}, got {mode!r}")
    if mode == "append":
        out = append_level(codes)
    else:
        if residuals is None or codebooks is None:
            raise ValueError("reassign needs the quantiser's per-level residuals and codebooks")
        out = reassign(codes, residuals, codebooks)
    assert not collision_groups(out), "collision resolution left duplicates"  # guarded by construction
    return out


def level_stats(codes: np.ndarray, sizes: list[int] | None = None) -> list[dict]:
    """Per level: codebook size (or max code + 1), codes used, usage entropy in bits and its max."""
    codes = np.asarray(codes)
    stats = []
    for level in range(codes.shape[1]):
        counts = np.bincount(codes[:, level])
        size = sizes[level] if sizes and level < len(sizes) else len(counts)
        p = counts[counts > 0] / counts.sum()
        stats.append({"level": LEVEL_LETTERS[level], "size": int(size), "used": int((counts > 0).sum()),
                      "entropy": float(-(p * np.log2(p)).sum()), "max_entropy": math.log2(size) if size > 1 else 0.0,
                      "largest": int(counts.max())})
    return stats


def reconstruction_error(x: np.ndarray, codes: np.ndarray, codebooks: list[np.ndarray], decode=None) -> float:
    """sum ||x - x_hat||^2 / sum ||x||^2 with x_hat = decode(sum_l codebook_l[code_l]).

    x [N, D]; codes [N, >= L] (an appended disambiguation level is ignored); codebooks L x [K_l, D_latent];
    decode maps [N, D_latent] -> [N, D] (identity for the k-means methods, whose codebooks live in x's space).
    """
    z_q = sum(np.asarray(cb, dtype=np.float64)[codes[:, level]] for level, cb in enumerate(codebooks))
    x_hat = decode(z_q) if decode is not None else z_q
    x = np.asarray(x, dtype=np.float64)
    return float(((x - x_hat) ** 2).sum() / max((x ** 2).sum(), 1e-12))


def sid_stats(codes: np.ndarray, sizes: list[int] | None = None, codes_before: np.ndarray | None = None) -> dict:
    """An index's SID figures as plain data (JSON-ready), for the report and for benches that compare candidates.

    collision_groups / collided_items: groups of >= 2 items sharing a full SID and the items in them (of `codes`;
    with `codes_before`, also `*_before`: straight out of the quantiser); codes_used: per level; levels: level_stats
    rows; first_level_items_max / _median: items per used first-level code (the first decoding step's branches)."""
    codes = np.asarray(codes)
    groups = collision_groups(codes)
    per_first = np.bincount(codes[:, 0])
    per_first = per_first[per_first > 0]
    levels = level_stats(codes, sizes)
    stats = {"items": len(codes), "num_levels": codes.shape[1],
             "collision_groups": len(groups), "collided_items": sum(map(len, groups)),
             "codes_used": [s["used"] for s in levels], "levels": levels,
             "first_level_items_max": int(per_first.max()), "first_level_items_median": float(np.median(per_first))}
    if codes_before is not None:
        before = collision_groups(codes_before)
        stats.update(collision_groups_before=len(before), collided_items_before=sum(map(len, before)))
    return stats


def report(name: str, codes_before: np.ndarray, codes_after: np.ndarray, sizes: list[int] | None = None,
           error: float | None = None) -> str:
    """The table every run prints: collisions before/after and per-level usage of the final codes."""
    stats = sid_stats(codes_after, sizes, None if codes_before is codes_after else codes_before)
    after = f"{stats['collision_groups']} ({stats['collided_items']} items)"
    collisions = (f"collision groups: {after}" if codes_before is codes_after
                  else f"collision groups before: {stats['collision_groups_before']} "
                       f"({stats['collided_items_before']} items)   after: {after}")
    lines = [
        f"== {name}: {stats['items']} items, {stats['num_levels']} levels",
        collisions,
        *([f"reconstruction error of the final codes (relative squared error): {error:.3f}"] if error is not None
          else []),
        f"items per first-level code: max {stats['first_level_items_max']}, "
        f"median {stats['first_level_items_median']:g} (over {stats['codes_used'][0]} used codes)",
        f"{'level':<6}{'size':>6}{'used':>6}{'used%':>8}{'entropy':>9}{'max':>7}{'largest':>9}",
    ]
    for s in stats["levels"]:
        lines.append(f"{s['level']:<6}{s['size']:>6}{s['used']:>6}{100 * s['used'] / s['size']:>7.1f}%"
                     f"{s['entropy']:>9.2f}{s['max_entropy']:>7.2f}{s['largest']:>9}")
    return "\n".join(lines)


def write_index(item_ids: list[str], codes: np.ndarray, path) -> Path:
    """`{item_id: ["<a_12>", "<b_40>", ...]}` in item order; refuses duplicate SIDs."""
    codes = np.asarray(codes)
    if len(item_ids) != len(codes):
        raise ValueError(f"{len(item_ids)} item ids but {len(codes)} code rows")
    if collision_groups(codes):
        raise CollisionError(f"{path}: codes contain duplicate SIDs; call make_unique first")
    from minionerec.run.atomic import atomic_write_text

    return atomic_write_text(path, json.dumps(dict(zip(map(str, item_ids), codes_to_sids(codes)))))


def load_index_codes(path) -> tuple[list[str], np.ndarray]:
    """index.json -> (item ids, codes [N, L]); for reporting on an existing (e.g. the release's) index."""
    from minionerec.data.formats import load_sid_index

    index = load_sid_index(path)
    return list(index), sids_to_codes(list(index.values()))


def finish(name: str, item_ids: list[str], codes: np.ndarray, output_path, mode: str = "reassign",
           residuals=None, codebooks=None, sizes: list[int] | None = None, x=None, decode=None,
           write_encoder=None) -> np.ndarray:
    """make_unique + print the report + write the index, its codebooks and (`write_encoder()`) its encoder; returns
    the final codes.

    With the embeddings `x` (and the model's `decode` for RQ-VAE-style methods) the report also gives
    the reconstruction error of the final codes, so methods can be compared on fidelity, not only usage.
    """
    final = make_unique(codes, mode, residuals, codebooks)
    if mode == "append" and sizes:
        sizes = [*sizes, int(final[:, -1].max()) + 1]
    error = reconstruction_error(x, final, codebooks, decode) if x is not None and codebooks is not None else None
    print(report(name, codes, final, sizes, error), flush=True)
    write_index(item_ids, final, output_path)
    if codebooks is not None:  # minionerec/rq/add_items.py gives new items SIDs with these codebooks frozen
        save_codebooks(output_path, codebooks, mode)
    if write_encoder is not None:
        write_encoder()
    else:  # an earlier rqvae / rqkmeans_plus run's: add_items would map new items through it into these codebooks
        index_sibling(output_path, ".encoder.pt").unlink(missing_ok=True)
    print(f"wrote {output_path}", flush=True)
    return final


def index_sibling(index_path, suffix: str) -> Path:
    """X.index.json -> X<suffix> beside it (the quantiser's state that belongs to this index)."""
    name = Path(index_path).name
    stem = name[: -len(".index.json")] if name.endswith(".index.json") else Path(name).stem
    return Path(index_path).with_name(f"{stem}{suffix}")


def index_files(index_path) -> tuple[Path, Path, Path]:
    """What a quantiser run writes together: X.index.json, X.codebooks.npz and (rqvae, rqkmeans_plus) X.encoder.pt."""
    return Path(index_path), codebooks_path(index_path), index_sibling(index_path, ".encoder.pt")


@contextlib.contextmanager
def writing_index(index_path):
    """A quantiser run's lock on its outputs (see minionerec.run.file_lock), parents created: minionerec.rq.add_items extending
    the index meanwhile would write the old SIDs next to the new codebooks."""
    Path(index_path).parent.mkdir(parents=True, exist_ok=True)
    with locked(*index_files(index_path)):
        yield


def codebooks_path(index_path) -> Path:
    return index_sibling(index_path, ".codebooks.npz")


def save_codebooks(index_path, codebooks: list[np.ndarray], mode: str) -> Path:
    """The quantiser's L codebooks [K_l, D] and its collision mode, written atomically beside the index."""
    path = codebooks_path(index_path)
    arrays = {f"level_{level}": np.asarray(cb, dtype=np.float32) for level, cb in enumerate(codebooks)}
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:  # a file object: np.savez would append ".npz" to a bare temp name
            np.savez(f, collision=np.array(mode), **arrays)
    return path


def load_codebooks(path) -> tuple[list[np.ndarray], str]:
    """(codebooks L x [K_l, D] float64, collision mode) from save_codebooks' file; anything else (truncated, another
    .npz, not a zip) is a ValueError naming the file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: codebooks not found (minionerec/rq/ writes them beside the index since this version; "
                                "re-run the quantiser to get them)")
    try:
        with np.load(path, allow_pickle=False) as data:
            levels = sorted((k for k in data.files if re.fullmatch(r"level_\d+", k)), key=lambda k: int(k[6:]))
            codebooks, mode = [data[k].astype(np.float64) for k in levels], str(data["collision"])
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as e:
        raise ValueError(f"{path}: not a codebooks file a minionerec/rq/ quantiser wrote ({reason(e)})") from None
    if (not codebooks or mode not in COLLISION_MODES or any(cb.ndim != 2 or not len(cb) for cb in codebooks)
            or len({cb.shape[1] for cb in codebooks}) != 1):
        raise ValueError(f"{path}: not a codebooks file a minionerec/rq/ quantiser wrote (levels "
                         f"{[list(cb.shape) for cb in codebooks]}, collision mode {mode!r})")
    return codebooks, mode


def quantize_frozen(x: np.ndarray, codebooks: list[np.ndarray]) -> tuple[np.ndarray, list[np.ndarray]]:
    """Nearest codeword per level, codebooks fixed: x [M, D] -> (codes [M, L], residuals L x [M, D] per level)."""
    residual = np.asarray(x, dtype=np.float64)
    codes, residuals = [], []
    for codebook in codebooks:
        idx = _sq_dist(residual, codebook).argmin(axis=1)  # [M]
        residuals.append(residual)
        codes.append(idx)
        residual = residual - codebook[idx]
    return np.stack(codes, axis=1).astype(np.int64), residuals


def extend_codes(existing: np.ndarray, new: np.ndarray, residuals: list[np.ndarray], codebooks: list[np.ndarray],
                 mode: str = "reassign") -> np.ndarray:
    """Codes for new items that collide with no existing item and no other new item; existing codes never move.

    existing [N, L] (reassign) or [N, L+1] (append); new [M, L] from quantize_frozen with its residuals.
    reassign: a new item whose code is taken moves to the nearest free (level L-1, level L) pair under its
    first L-2 codes (the same rule as the spill step of `reassign`); append: the extra level numbers it
    after the items already sharing its L codes.
    """
    existing, new = np.asarray(existing, dtype=np.int64), np.asarray(new, dtype=np.int64)
    levels = new.shape[1]
    if existing.shape[1] != levels + (mode == "append"):
        raise ValueError(f"the index has {existing.shape[1]} levels but the codebooks give {levels}"
                         f"{' + 1 (append)' if mode == 'append' else ''}")
    if mode == "append":
        seen: dict[tuple, int] = defaultdict(int)
        for row in existing.tolist():
            seen[tuple(row[:-1])] = max(seen[tuple(row[:-1])], row[-1] + 1)
        extra = np.zeros(len(new), dtype=np.int64)
        for i, row in enumerate(map(tuple, new.tolist())):
            extra[i] = seen[row]
            seen[row] += 1
        return np.concatenate([new, extra[:, None]], axis=1)
    combined = np.concatenate([existing, new])  # [N + M, L]
    taken = set(map(tuple, existing.tolist()))
    overflow = []
    for i, row in enumerate(map(tuple, new.tolist())):
        if row in taken:
            overflow.append(len(existing) + i)
        else:
            taken.add(row)
    if overflow:
        if levels < 2:
            raise CollisionError("a one-level index cannot place a colliding new item without moving others")
        padded = [np.concatenate([np.zeros((len(existing), r.shape[1])), r]) for r in residuals[-2:]]  # [N + M, D]
        _spill(combined, overflow, padded, [np.asarray(c, dtype=np.float64) for c in codebooks[-2:]])
    out = combined[len(existing):]
    assert not collision_groups(combined), "extend_codes left duplicates"  # guaranteed by _spill's free pairs
    return out
