"""Scale benchmark: seconds and peak memory of every stage a user runs, as the dataset grows.

    python -m bench.scale                                         # 1k items:10k rows and 10k:100k
    python -m bench.scale --sizes 1k:10k,10k:100k,100k:1M         # the acceptance run (issue 39)
    python -m bench.scale --sizes 200:2000,500:5000 --stages generate,tfidf,rqkmeans,convert,add_items  # the test

Per size (`ITEMS:TRAIN_ROWS`, k/M suffixes allowed) a synthetic dataset is generated once
(minionerec.prep.make_scale_data, kept under --data_root keyed by size, seed and the generator's source, reused by
later runs), then each stage runs as its own child process (its command printed) and is measured: wall seconds, and
the child's peak RSS (ru_maxrss from os.wait4, as bench/load_memory.py does). The model is the random tiny Qwen2 of
minionerec.model.tiny built per size, so training and decoding rows measure the data, tokenizer, trie and catalogue
costs that grow with the dataset, not a real model's compute. A stage that fails or times out is recorded as
`failed: <its last stderr line>` and the bench goes on. One table (markdown) is printed and written with a JSON twin
under --out; how to read it: docs/scale.md.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import re
import shlex
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CAT = "Scale"
MINILM = ROOT / "models" / "all-MiniLM-L6-v2"
PY = sys.executable
# --stages name -> the table rows it fills (row key, label); the table keeps this order
STAGES = {
    "generate": [("generate", "generate (make_scale_data; not a user stage)")],
    "imports": [("imports", "baseline: python + torch + transformers imports")],
    "tiny": [("tiny", "tiny model build (setup, not a user stage)")],
    "tfidf": [("tfidf", "text2emb tfidf")],
    "minilm": [("minilm", "text2emb MiniLM (extrapolated from a slice)")],
    "rqkmeans": [("rqkmeans", "SIDs rqkmeans (faiss)")],
    "balanced_rqkmeans": [("balanced_rqkmeans", "SIDs balanced_rqkmeans")],
    "rqkmeans_plus": [("rqkmeans_plus", "SIDs rqkmeans_plus ({epochs} epochs)")],
    "rqvae": [("rqvae", "SIDs rqvae ({epochs} epochs)")],
    "convert": [("convert", "convert_dataset.py (.inter -> CSV)")],
    "sft_data": [("sft_data", "sft data (sft.py --dry_run)")],
    "sft": [("sft_cold", "sft.py to step 1, cold"), ("sft_warm", "sft.py to step 1, warm")],
    "rl": [("rl", "rl.py to step 1")],
    "trie": [("trie", "constrained-decoding trie build")],
    "evaluate": [("evaluate", "evaluate.py ({users} users, {beams} beams)")],
    "serve": [("serve", "serve.py start-up (to /health)")],
    "add_items": [("add_items", "add_items (+{new} items)")],
}
SLOW = ("minilm", "rqvae")  # --skip_slow drops these
SETUP_ROWS = {"generate", "imports", "tiny"}  # never the bottleneck: a user does not run them


class StageFailed(Exception):
    pass


@dataclass
class Size:
    items: int
    rows: int

    @property
    def key(self) -> str:
        return f"{short(self.items)}:{short(self.rows)}"


@dataclass
class Ctx:
    """One size's paths and the artifacts built so far (embeddings, tiny model, an index with codebooks)."""

    size: Size
    args: argparse.Namespace
    data: Path
    work: Path
    env: dict
    artifacts: dict = field(default_factory=dict)
    notes: dict = field(default_factory=dict)  # row key -> note for this size

    def path(self, *parts) -> Path:
        p = self.work.joinpath(*parts)
        p.parent.mkdir(parents=True, exist_ok=True)
        return p

    @property
    def logs(self) -> Path:
        logs = self.args.out / "logs" / self.size.key.replace(":", "_")
        logs.mkdir(parents=True, exist_ok=True)
        return logs

    @property
    def index(self) -> str:
        return str(self.data / "index" / f"{CAT}.index.json")

    @property
    def item_json(self) -> str:
        return str(self.data / "index" / f"{CAT}.item.json")

    def split(self, name: str) -> str:
        return str(self.data / name / f"{CAT}.csv")


def short(n: int) -> str:
    for suffix, unit in (("M", 10**6), ("k", 10**3)):
        if n >= unit and n % unit == 0:
            return f"{n // unit}{suffix}"
    return str(n)


def parse_count(text: str) -> int:
    m = re.fullmatch(r"(\d+(?:\.\d+)?)([kKmM]?)", text.strip())
    if not m:
        raise ValueError(text)
    return int(float(m.group(1)) * {"": 1, "k": 10**3, "m": 10**6}[m.group(2).lower()])


def parse_sizes(text: str) -> list[Size]:
    sizes = []
    for part in text.split(","):
        items, rows = part.split(":")
        sizes.append(Size(parse_count(items), parse_count(rows)))
    return sizes


def growth_per_10x(t1: float | None, t2: float | None, rows1: int, rows2: int) -> float | None:
    """Time ratio between two sizes normalised to a 10x step of train rows: (t2/t1)^(1/log10(rows2/rows1))."""
    if not t1 or not t2 or t1 <= 0 or rows1 == rows2:
        return None
    return (t2 / t1) ** (1 / math.log10(rows2 / rows1))


# ---------------------------------------------------------------------------------------------------- measuring
def last_line(path: Path) -> str:
    text = path.read_text(errors="replace") if path.is_file() else ""
    lines = [ln.split("\r")[-1].strip() for ln in text.splitlines()]
    lines = [ln for ln in lines if ln]
    return lines[-1][:300] if lines else ""


def measure(ctx: Ctx, name: str, cmd: list[str]) -> dict:
    """Run cmd as a child (stdout/stderr to logs/<size>/<name>.out|.err): seconds, peak RSS GiB, status, stdout."""
    print(f"[scale] {ctx.size.key} {name}: $ {shlex.join(cmd)}", flush=True)
    out, err = ctx.logs / f"{name}.out", ctx.logs / f"{name}.err"
    start = time.perf_counter()
    with out.open("w") as fo, err.open("w") as fe:
        proc = subprocess.Popen(cmd, cwd=ROOT, env=ctx.env, stdout=fo, stderr=fe, start_new_session=True)
        timed_out = False
        try:
            while True:
                pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
                if pid:
                    break
                if time.perf_counter() - start > ctx.args.stage_timeout:
                    timed_out = True
                    os.killpg(proc.pid, 9)
                    _, status, usage = os.wait4(proc.pid, 0)
                    break
                time.sleep(0.05)
        except BaseException:  # Ctrl-C: the child has its own session (for the timeout's killpg), so stop it here
            os.killpg(proc.pid, 9)
            os.wait4(proc.pid, 0)
            raise
    seconds = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    result = {"seconds": round(seconds, 2), "peak_gib": round(usage.ru_maxrss / 2**20, 3), "status": "ok",
              "command": shlex.join(cmd), "stdout": out.read_text(errors="replace")}
    if timed_out:
        result["status"] = f"failed: timed out after {ctx.args.stage_timeout:g} s"
    elif proc.returncode:
        result["status"] = f"failed: {last_line(err) or last_line(out) or f'exit code {proc.returncode}'}"
    print(f"[scale] {ctx.size.key} {name}: {result['status']}, {seconds:.1f} s, peak {result['peak_gib']:.2f} GiB",
          flush=True)
    return result


def checked(result: dict, what: str) -> dict:
    if result["status"] != "ok":
        raise StageFailed(f"{what}: {result['status']}")
    return result


def need(ctx: Ctx, artifact: str) -> str:
    """The artifact's path, building it first (as setup, untabled) when no earlier stage did."""
    if artifact not in ctx.artifacts:
        producer = {"emb": stage_tfidf, "tiny": stage_tiny, "codebook_index": stage_rqkmeans}[artifact]
        print(f"[scale] {ctx.size.key}: building {artifact} first (setup)", flush=True)
        result = next(iter(producer(ctx).values()))
        if artifact not in ctx.artifacts:
            raise StageFailed(f"failed: setup of {artifact}: {result['status']}")
    return ctx.artifacts[artifact]


# ---------------------------------------------------------------------------------------------------- the stages
def generate(size: Size, args) -> tuple[Path, dict]:
    """The size's dataset (reused when a complete one exists) and its generate row."""
    # the generator's source in the key: a changed generator never reuses another one's data
    source = hashlib.sha256((ROOT / "minionerec/prep/make_scale_data.py").read_bytes()).hexdigest()[:8]
    data = args.data_root / f"items{size.items}_rows{size.rows}_seed{args.seed}_{source}"
    marker = data / ".scale_bench.json"
    if marker.is_file():
        return data, {**json.loads(marker.read_text()), "cached": True}
    partial = data.with_name(data.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    ctx = Ctx(size, args, partial, partial, child_env(args))
    result = measure(ctx, "generate", [PY, "-m", "minionerec.prep.make_scale_data", "--output_dir", str(partial),
                                       "--num_items", str(size.items), "--train_rows", str(size.rows),
                                       "--seed", str(args.seed)])
    result.pop("stdout")
    if result["status"] == "ok":
        (partial / ".scale_bench.json").write_text(json.dumps(result))
        shutil.rmtree(data, ignore_errors=True)
        partial.rename(data)
    return data, result


def stage_imports(ctx: Ctx) -> dict:
    """What every torch stage pays before its own work: read the other rows net of it."""
    return {"imports": measure(ctx, "imports", [PY, "-c", "import torch, transformers, minionerec"])}


def stage_tiny(ctx: Ctx) -> dict:
    out = ctx.path("tiny")
    r = measure(ctx, "tiny", [PY, "-m", "minionerec.model.tiny", "--output_dir", str(out),
                              "--sid_index_path", ctx.index, "--item_meta_path", ctx.item_json])
    if r["status"] == "ok":
        ctx.artifacts["tiny"] = str(out)
    return {"tiny": r}


def stage_tfidf(ctx: Ctx) -> dict:
    out = ctx.path("emb", f"{CAT}.emb.npy")
    r = measure(ctx, "tfidf", [PY, "-m", "minionerec.rq.text2emb", "--method", "tfidf", "--item_meta_path",
                               ctx.item_json, "--output_path", str(out)])
    if r["status"] == "ok":
        ctx.artifacts["emb"] = str(out)
    return {"tfidf": r}


def stage_minilm(ctx: Ctx) -> dict:
    """text2emb with MiniLM on the first --minilm_slice items, and on its first batch (64 items) for the fixed cost
    (model loading, the first batch); the catalogue's time = the slice's wall time + the rest at the rate between
    the two runs."""
    if not (MINILM / "config.json").is_file():
        return {"minilm": {"status": f"skipped: no {MINILM.relative_to(ROOT)} (make minilm)"}}
    meta = json.loads(Path(ctx.item_json).read_text())
    n = min(ctx.args.minilm_slice, len(meta))
    runs, plan = {}, [("minilm_first_batch", 64), ("minilm", n)] if n < len(meta) and n > 64 else [("minilm", n)]
    for name, count in plan:
        sliced = ctx.path("minilm", f"{count}.item.json")
        sliced.write_text(json.dumps(dict(list(meta.items())[:count])))
        runs[name] = measure(ctx, name, [PY, "-m", "minionerec.rq.text2emb", "--item_meta_path", str(sliced),
                                         "--output_path", str(ctx.path("minilm", f"{count}.emb.npy")), "--model_path",
                                         str(MINILM), "--device", "cpu"])
        if runs[name]["status"] != "ok":
            break
    r = runs.get("minilm") or runs["minilm_first_batch"]
    seconds = [re.search(r"\[text2emb\] [\d,]+ items in ([\d.]+) s", x["stdout"]) for x in runs.values()]
    if len(runs) == 2 and r["status"] == "ok" and all(seconds):
        fixed, slice_s = (float(m.group(1)) for m in seconds)
        # items/s past the model load and first batch (timing noise can invert the two: then the slice's own rate)
        rate = (n - 64) / (slice_s - fixed) if slice_s > fixed else n / slice_s
        r.update(measured_seconds=r["seconds"], slice_items=n, items_per_s=round(rate, 1),
                 seconds=round(r["seconds"] + (len(meta) - n) / rate, 2))
        ctx.notes["minilm"] = f"extrapolated from {n:,} items at {rate:,.0f} items/s (fixed cost {fixed:.1f} s)"
    elif r["status"] == "ok" and n == len(meta):
        ctx.notes["minilm"] = f"measured on all {n:,} items"
    return {"minilm": r}


def quantiser(method: str, extra: tuple[str, ...] = ()):
    def stage(ctx: Ctx) -> dict:
        from minionerec.prep.make_scale_data import sid_shape

        levels, codes = sid_shape(ctx.size.items)
        out = ctx.path("sids", method, f"{CAT}.index.json")
        epochs = ("--epochs", str(ctx.args.rq_epochs)) if method in ("rqvae", "rqkmeans_plus") else ()
        r = measure(ctx, method, [PY, "-m", f"minionerec.rq.{method}", "--embedding_path", need(ctx, "emb"),
                                  "--output_path", str(out), "--levels", str(levels), "--codebook_size", str(codes),
                                  *epochs, *extra])
        ctx.notes[method] = f"{levels}x{codes}"
        if r["status"] == "ok" and method == "rqkmeans":
            ctx.artifacts["codebook_index"] = str(out)
        return {method: r}
    return stage


stage_rqkmeans = quantiser("rqkmeans")


def stage_convert(ctx: Ctx) -> dict:
    raw = ctx.data / "raw"
    return {"convert": measure(ctx, "convert", [
        PY, "convert_dataset.py", "--inter_dir", str(raw), "--category", CAT, "--item_meta_path",
        str(raw / f"{CAT}.item.json"), "--sid_index_path", str(raw / f"{CAT}.index.json"),
        "--output_dir", str(ctx.path("convert", "x").parent)])}


def sft_cmd(ctx: Ctx, output_dir: Path, *extra: str) -> list[str]:
    return [PY, "sft.py", "--base_model", need(ctx, "tiny"), "--train_file", ctx.split("train"),
            "--sid_index_path", ctx.index, "--item_meta_path", ctx.item_json, "--output_dir", str(output_dir),
            "--max_steps", "1", "--batch_size", "8", "--micro_batch_size", "8", *extra]


def sft_has_cache_flag(ctx: Ctx) -> bool:
    """Whether sft.py has --data_cache_dir (the prepared-rows cache), read from its --help once per bench run."""
    if getattr(ctx.args, "sft_cache_flag", None) is None:
        help_text = subprocess.run([PY, "sft.py", "--help"], cwd=ROOT, env=ctx.env, capture_output=True, text=True)
        ctx.args.sft_cache_flag = "data_cache_dir:" in help_text.stdout + help_text.stderr
    return ctx.args.sft_cache_flag


def sft_data_note(ctx: Ctx, key: str, result: dict) -> None:
    """sft.py's own line for its data stage ('[sft] data: N rows built into|read from ... in S s'), as a note."""
    m = re.search(r"\[sft\] data: ([\d,]+) rows (built|read)\b.* in ([\d.]+) s", result.get("stdout", ""))
    if m:
        ctx.notes[key] = f"{m.group(1)} rows {m.group(2)} in {m.group(3)} s"


def stage_sft_data(ctx: Ctx) -> dict:
    # no cache: the rows are built (an earlier run's cache entry would make this a read)
    extra = ("--data_cache_dir", "") if sft_has_cache_flag(ctx) else ()
    r = measure(ctx, "sft_data", sft_cmd(ctx, ctx.path("sft_dry"), "--dry_run", "true", *extra))
    sft_data_note(ctx, "sft_data", r)
    return {"sft_data": r}


def stage_sft(ctx: Ctx) -> dict:
    """Cold (a fresh --data_cache_dir) then warm (the same one again); without the flag, the same command twice."""
    cache = ctx.path("sft_cache", "x").parent
    extra = ("--data_cache_dir", str(cache)) if sft_has_cache_flag(ctx) else ()
    out = {}
    for key in ("sft_cold", "sft_warm"):
        out[key] = measure(ctx, key, sft_cmd(ctx, ctx.path(key), *extra))
        sft_data_note(ctx, key, out[key])
    if not extra:
        ctx.notes["sft_warm"] = "sft.py has no --data_cache_dir: warm = the same run again (OS file cache only)"
    return out


def stage_rl(ctx: Ctx) -> dict:
    return {"rl": measure(ctx, "rl", [
        PY, "rl.py", "--model_path", need(ctx, "tiny"), "--train_file", ctx.split("train"), "--sid_index_path",
        ctx.index, "--item_meta_path", ctx.item_json, "--output_dir", str(ctx.path("rl")), "--max_steps", "1",
        "--num_generations", "4", "--batch_size", "8", "--micro_batch_size", "8"])}


def stage_trie(ctx: Ctx) -> dict:
    r = measure(ctx, "trie", [PY, "-m", "bench.scale", "--child_trie", ctx.index, need(ctx, "tiny")])
    m = re.search(r"trie built in ([\d.]+) s", r.get("stdout", ""))
    if m:
        ctx.notes["trie"] = f"build itself {float(m.group(1)):.2f} s"
    return {"trie": r}


def child_trie(index: str, model: str) -> None:
    """In the child: build_sid_trie over the index with the model's tokenizer (SID tokens added), as evaluate.py."""
    from minionerec.data.formats import load_sid_index
    from minionerec.model.loading import load_tokenizer
    from minionerec.ranking.constrained import build_sid_trie

    sid_index, tokenizer = load_sid_index(index), load_tokenizer(model)
    start = time.perf_counter()
    trie = build_sid_trie(sid_index, tokenizer)
    print(f"trie built in {time.perf_counter() - start:.3f} s: {trie.num_sids} SIDs, depth {trie.depth}", flush=True)


def stage_evaluate(ctx: Ctx) -> dict:
    a = ctx.args
    r = measure(ctx, "evaluate", [
        PY, "evaluate.py", "--base_model", need(ctx, "tiny"), "--test_file", ctx.split("test"), "--sid_index_path",
        ctx.index, "--sample", str(a.eval_users), "--num_beams", str(min(a.beams, ctx.size.items)),
        "--dtype", "float32", "--result_json", str(ctx.path("eval", "predictions.json"))])
    m = re.search(r"\] \S+: (\d+) users, .* decoding ([\d.]+)s", r.get("stdout", ""))
    if m:
        r["users_per_s"] = round(int(m.group(1)) / max(float(m.group(2)), 1e-9), 2)
        ctx.notes["evaluate"] = f"{r['users_per_s']} users/s decoding"
    return {"evaluate": r}


def stage_serve(ctx: Ctx) -> dict:
    """serve.py until /health answers: seconds to then, RSS then (VmRSS); the server is stopped after."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cmd = [PY, "serve.py", "--base_model", need(ctx, "tiny"), "--sid_index_path", ctx.index, "--item_meta_path",
           ctx.item_json, "--host", "127.0.0.1", "--port", str(port), "--num_beams",
           str(min(ctx.args.beams, ctx.size.items)), "--device", "cpu"]
    print(f"[scale] {ctx.size.key} serve: $ {shlex.join(cmd)}", flush=True)
    err = ctx.logs / "serve.err"
    start = time.perf_counter()
    with err.open("w") as fe:
        proc = subprocess.Popen(cmd, cwd=ROOT, env=ctx.env, stdout=subprocess.DEVNULL, stderr=fe)
    result = {"command": shlex.join(cmd), "status": f"failed: no /health within {ctx.args.stage_timeout:g} s"}
    try:
        while time.perf_counter() - start < ctx.args.stage_timeout:
            if proc.poll() is not None:
                result["status"] = f"failed: {last_line(err) or f'exit code {proc.returncode}'}"
                break
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as response:
                    if response.status == 200:
                        seconds = time.perf_counter() - start
                        status = Path(f"/proc/{proc.pid}/status").read_text()
                        rss_kib = int(re.search(r"VmRSS:\s+(\d+)", status).group(1))
                        result.update(seconds=round(seconds, 2), peak_gib=round(rss_kib / 2**20, 3), status="ok")
                        break
            except OSError:
                time.sleep(0.2)
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
    print(f"[scale] {ctx.size.key} serve: {result['status']}, {result.get('seconds', '-')} s", flush=True)
    ctx.notes["serve"] = "GiB = the server's RSS when /health first answered"
    return {"serve": result}


def stage_add_items(ctx: Ctx) -> dict:
    """add_items on a copy of the rqkmeans index: --new_items items (catalogue items re-titled "v2", embedded with
    the catalogue's saved TF-IDF fit), written to a new index file."""
    index = need(ctx, "codebook_index")
    emb = need(ctx, "emb")
    meta = json.loads(Path(ctx.item_json).read_text())
    new = {f"new_{i}": {**m, "title": m["title"] + " v2"}
           for i, m in enumerate(list(meta.values())[:ctx.args.new_items])}
    new_json = ctx.path("add_items", "new.item.json")
    new_json.write_text(json.dumps(new))
    new_emb = ctx.path("add_items", "new.emb.npy")
    checked(measure(ctx, "add_items_embed", [
        PY, "-m", "minionerec.rq.text2emb", "--method", "tfidf", "--item_meta_path", str(new_json),
        "--output_path", str(new_emb), "--tfidf_fit", emb.removesuffix(".npy") + ".tfidf.joblib"]),
        "embedding the new items")
    return {"add_items": measure(ctx, "add_items", [
        PY, "-m", "minionerec.rq.add_items", "--sid_index_path", index, "--embedding_path", str(new_emb),
        "--new_items_path", str(new_json), "--output_path", str(ctx.path("add_items", f"{CAT}.index.json"))])}


RUNNERS = {"imports": stage_imports, "tiny": stage_tiny, "tfidf": stage_tfidf, "minilm": stage_minilm, "rqkmeans": stage_rqkmeans,
           "balanced_rqkmeans": quantiser("balanced_rqkmeans"), "rqkmeans_plus": quantiser("rqkmeans_plus"),
           "rqvae": quantiser("rqvae"), "convert": stage_convert, "sft_data": stage_sft_data, "sft": stage_sft,
           "rl": stage_rl, "trie": stage_trie, "evaluate": stage_evaluate, "serve": stage_serve,
           "add_items": stage_add_items}


def child_env(args) -> dict:
    env = {**os.environ, "TOKENIZERS_PARALLELISM": "false", "WANDB_MODE": "disabled",
           "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH", "")]))}
    # sft.py's prepared-rows cache defaults to ~/.cache: runs of the bench keep theirs under --out
    env["MINIONEREC_CACHE"] = str(args.out / "minionerec_cache")
    if args.threads:
        env.update(OMP_NUM_THREADS=str(args.threads), MKL_NUM_THREADS=str(args.threads))
    return env


def run_size(size: Size, args) -> tuple[dict, dict]:
    """{row key: result} and {row key: note} for one size."""
    data, gen = generate(size, args)
    results, notes = {}, {}
    if "generate" in args.stages:
        results["generate"] = gen
        if gen.pop("cached", False):
            notes["generate"] = f"reused {data} (seconds and GiB as measured when it was built)"
    if gen["status"] != "ok":
        for stage in args.stages:
            for key, _ in STAGES[stage]:
                results.setdefault(key, {"status": f"failed: no data ({gen['status']})"})
        return results, notes
    work = args.out / "work" / size.key.replace(":", "_")
    shutil.rmtree(work, ignore_errors=True)
    ctx = Ctx(size, args, data, work, child_env(args))
    for stage in args.stages:
        if stage == "generate":
            continue
        try:
            out = RUNNERS[stage](ctx)
        except StageFailed as e:
            out = {key: {"status": str(e) if str(e).startswith("failed") else f"failed: {e}"}
                   for key, _ in STAGES[stage]}
        for r in out.values():
            r.pop("stdout", None)
        results.update(out)
    notes.update(ctx.notes)
    return results, notes


# ---------------------------------------------------------------------------------------------------- the table
def make_report(sizes: list[Size], results: dict, notes: dict, args) -> tuple[str, dict]:
    """(markdown, JSON-able dict): rows = stages, per size seconds + peak GiB, growth per 10x, bottleneck marked."""
    fill = {"epochs": args.rq_epochs, "users": args.eval_users, "beams": args.beams, "new": args.new_items}
    rows = [(key, label.format(**fill)) for stage in args.stages for key, label in STAGES[stage]]
    bottleneck = {}
    for s in sizes:
        timed = {k: r["seconds"] for k, r in results[s.key].items()
                 if r.get("status") == "ok" and k not in SETUP_ROWS and r.get("seconds") is not None}
        bottleneck[s.key] = max(timed, key=timed.get) if timed else None
    head = ["stage"] + [c for s in sizes for c in (f"{s.key} s", f"{s.key} GiB")] + ["growth per 10x rows"]
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join(["---"] + ["---:"] * (len(head) - 1)) + "|"]
    table = []
    for key, label in rows:
        cells, entry = [label], {"row": key, "stage": label, "sizes": {}, "growth_per_10x": []}
        for s in sizes:
            r = results[s.key].get(key, {"status": "not run"})
            entry["sizes"][s.key] = r
            if r.get("status") == "ok":
                mark = " *" if bottleneck[s.key] == key else ""
                cells += [f"{r['seconds']:.1f}{mark}", f"{r['peak_gib']:.2f}"]
            else:
                cells += [r["status"][:80].replace("|", "/"), "-"]
        for a, b in zip(sizes, sizes[1:]):
            ra, rb = entry["sizes"][a.key], entry["sizes"][b.key]
            ok = ra.get("status") == rb.get("status") == "ok"
            g = growth_per_10x(ra.get("seconds"), rb.get("seconds"), a.rows, b.rows) if ok else None
            entry["growth_per_10x"].append(None if g is None else round(g, 2))
        cells.append(" / ".join("-" if g is None else f"x{g:.1f}" for g in entry["growth_per_10x"]) or "-")
        lines.append("| " + " | ".join(cells) + " |")
        table.append(entry)
    legend = ["", "sizes = items:train rows; * = the slowest user stage at that size (the bottleneck); growth per "
              "10x rows = (t2/t1)^(1/log10(rows2/rows1)) between consecutive sizes (10 = linear in the rows); GiB = "
              "the child's peak RSS (ru_maxrss). Commands and per-stage logs: the JSON and logs/ beside it."]
    for key, label in rows:
        per_size = [f"{s.key}: {notes[s.key][key]}" for s in sizes if key in notes[s.key]]
        if per_size:
            legend.append(f"- {label}: " + "; ".join(per_size))
    for s in sizes:
        for key, r in results[s.key].items():
            if r.get("status", "ok") != "ok" and len(r["status"]) > 80:
                legend.append(f"- {s.key} {key}: {r['status']}")
    markdown = "\n".join(lines + legend)
    report = {"date": time.strftime("%Y-%m-%d %H:%M"), "cpus": os.cpu_count(), "threads": args.threads or None,
              "sizes": [{"key": s.key, "items": s.items, "train_rows": s.rows} for s in sizes],
              "rows": table, "bottleneck": bottleneck, "notes": notes,
              "sft_data_cache_flag": getattr(args, "sft_cache_flag", None)}
    return markdown, report


def parse_args(argv=None):
    p = argparse.ArgumentParser(prog="python -m bench.scale", description=__doc__.splitlines()[0])
    p.add_argument("--sizes", default="1k:10k,10k:100k",
                   help="items:train_rows per size, comma-separated (k/M suffixes); acceptance: 1k:10k,10k:100k,100k:1M")
    p.add_argument("--stages", default=",".join(STAGES), help=f"comma-separated, in table order: {','.join(STAGES)}")
    p.add_argument("--skip_slow", action="store_true", help=f"drop {' and '.join(SLOW)}")
    p.add_argument("--out", default="bench/out/scale", help="scale.md, scale.json, logs/ and work/ go here")
    p.add_argument("--data_root", default="", help="generated datasets, reused across runs; '' = <out>/data")
    p.add_argument("--seed", type=int, default=0, help="make_scale_data's seed (part of the dataset's key)")
    p.add_argument("--rq_epochs", type=int, default=5, help="rqvae and rqkmeans_plus training epochs")
    p.add_argument("--minilm_slice", type=int, default=2000, help="items MiniLM embeds; the rest is extrapolated")
    p.add_argument("--eval_users", type=int, default=20, help="test users evaluate.py decodes")
    p.add_argument("--beams", type=int, default=50, help="beams of evaluate.py and serve.py")
    p.add_argument("--new_items", type=int, default=100, help="items add_items adds")
    p.add_argument("--stage_timeout", type=float, default=1800, help="seconds before a stage is killed (failed)")
    p.add_argument("--threads", type=int, default=0, help="OMP/MKL threads of every child; 0 = leave as is")
    p.add_argument("--child_trie", nargs=2, metavar=("INDEX", "MODEL"), help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child_trie:
        return args
    try:
        args.sizes = parse_sizes(args.sizes)
    except ValueError:
        p.error(f"--sizes: expected ITEMS:ROWS[,ITEMS:ROWS...], e.g. 1k:10k,10k:100k, got {args.sizes!r}")
    args.stages = [s.strip() for s in args.stages.split(",") if s.strip()]
    unknown = [s for s in args.stages if s not in STAGES]
    if unknown:
        p.error(f"--stages: unknown {', '.join(unknown)}; choose from {','.join(STAGES)}")
    args.stages = [s for s in STAGES if s in args.stages and not (args.skip_slow and s in SLOW)]
    if args.minilm_slice <= 64:
        p.error("--minilm_slice must be > 64 (its first 64 items are the fixed-cost run)")
    if any(s.items < 2 or s.rows < 8 for s in args.sizes) or len({s.key for s in args.sizes}) < len(args.sizes):
        p.error("--sizes: each size needs >= 2 items and >= 8 rows, and no size may repeat")
    args.out = Path(args.out).resolve()
    args.data_root = Path(args.data_root).resolve() if args.data_root else args.out / "data"
    return args


def main(argv=None) -> dict | None:
    from minionerec.run.atomic import atomic_write_text

    args = parse_args(argv)
    if args.child_trie:
        return child_trie(*args.child_trie)
    args.out.mkdir(parents=True, exist_ok=True)
    results, notes = {}, {}
    for size in args.sizes:
        print(f"\n[scale] === {size.key}: {size.items:,} items, {size.rows:,} train rows", flush=True)
        results[size.key], notes[size.key] = run_size(size, args)
    markdown, report = make_report(args.sizes, results, notes, args)
    header = f"# Scale bench, {report['date']}, {report['cpus']} CPUs ({' '.join(sys.argv[1:]) or 'defaults'})\n\n"
    atomic_write_text(args.out / "scale.md", header + markdown + "\n")
    atomic_write_text(args.out / "scale.json", json.dumps(report, indent=1))
    print("\n" + header + markdown, flush=True)
    print(f"\n[scale] wrote {args.out / 'scale.md'} and {args.out / 'scale.json'}", flush=True)
    return report


if __name__ == "__main__":
    main()
