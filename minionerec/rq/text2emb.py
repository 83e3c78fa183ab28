"""Item text (item.json fields, default title + description) -> embeddings `.npy` + item ids `.ids.json`.

Row i of `<output_path>` (.npy, float32 [N, D]) embeds item `ids[i]` of `<output_path minus .npy>.ids.json`;
the ids follow item.json's key order. `--fields` picks the item.json keys embedded, "+"-joined in order
(default title+description); each field is flattened to text and the fields are joined by ". ". Three methods,
each printing its throughput (`[text2emb] N items in S s: R items/s (method, device)`, model loading included):

- `sentence_transformers` (default): a LOCAL model directory (`--model_path`, nothing is downloaded, e.g.
  models/all-MiniLM-L6-v2 from `make minilm`), mean or last-token pooling, optional L2 normalisation. Under
  `accelerate launch` each process embeds its share of the catalogue and the main process joins the parts.
- `causal_lm`: any local causal LM directory (`--model_path`, e.g. models/SmolLM2-135M from
  `make pretrained`, or an SFT checkpoint): the attention-masked mean of the last hidden states of the
  item text (`--normalize` applies). Under `accelerate launch` the catalogue is split as above.
- `tfidf`: offline fallback with no model: TF-IDF (uni+bigrams) -> TruncatedSVD -> L2 normalise. The fit
  is saved beside the output (`X.tfidf.joblib`); `--tfidf_fit X.tfidf.joblib` embeds new items with it.

A flag only another method reads (METHOD_FLAGS) is a one-line error when set, never ignored; every flag and the
output path are checked before item.json is read or anything is written.

    python -m minionerec.rq.text2emb --item_meta_path Cat.item.json --output_path Cat.emb.npy --model_path /models/qwen3-emb
    python -m minionerec.rq.text2emb --item_meta_path Cat.item.json --output_path Cat.emb.npy \
        --model_path models/all-MiniLM-L6-v2 --fields title+brand+categories+description
    python -m minionerec.rq.text2emb --item_meta_path Cat.item.json --output_path Cat.emb.npy --method causal_lm \
        --model_path models/SmolLM2-135M
    python -m minionerec.rq.text2emb --item_meta_path Cat.item.json --output_path Cat.emb.npy --method tfidf --dim 256
"""
from __future__ import annotations

import ast
import html
import re
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np


from minionerec.run.atomic import atomic_path
from minionerec.run.cli import run
from minionerec.run.preflight import writable_dir
from minionerec.data.formats import DataError, load_item_meta
from minionerec.rq.common import ids_path, reason, save_embeddings

_TAG = re.compile(r"<[^>]+>")
METHODS = ("sentence_transformers", "causal_lm", "tfidf")


@dataclass
class Args:
    """Embed item text (title + description, or --fields) into a .npy aligned with an .ids.json of item ids."""

    item_meta_path: str = ""  # item.json
    fields: str = "title+description"  # "+"-joined item.json keys embedded in this order, e.g. title+brand+categories+description
    output_path: str = ""  # .npy to write; item ids go to the .ids.json beside it
    method: str = "sentence_transformers"  # sentence_transformers | causal_lm (mean-pooled LM hidden states) | tfidf
    model_path: str = ""  # local sentence-transformers, Hugging Face or causal LM model directory
    pooling: str = "mean"  # sentence_transformers only: mean | lasttoken (decoder-only embedders, Qwen3-Embedding)
    batch_size: int = 64  # sentence_transformers, causal_lm: item texts per forward batch, per process
    max_length: int = 256  # tokens per item text
    normalize: bool = True  # L2-normalise the vectors
    device: str = ""  # "" = cuda when available, else cpu
    dim: int = 256  # tfidf only: SVD components
    seed: int = 0  # tfidf only: SVD seed
    tfidf_fit: str = ""  # tfidf only: embed with this saved fit (X.tfidf.joblib, a pickle: only your own; new items)


DEFAULT_FIELDS = tuple(Args.fields.split("+"))
# flags only some methods read: under another method a value other than the default is an error, not ignored
METHOD_FLAGS = {
    "model_path": ("sentence_transformers", "causal_lm"),
    "pooling": ("sentence_transformers",),
    "batch_size": ("sentence_transformers", "causal_lm"),
    "max_length": ("sentence_transformers", "causal_lm"),
    "normalize": ("sentence_transformers", "causal_lm"),  # tfidf always L2-normalises
    "device": ("sentence_transformers", "causal_lm"),
    "dim": ("tfidf",),
    "seed": ("tfidf",),
    "tfidf_fit": ("tfidf",),
}


def _flatten(value) -> str:
    """Item fields (description, categories) come as lists, strings, or strings holding a Python list literal."""
    if isinstance(value, str) and value.startswith("[") and value.endswith("]"):
        try:
            value = ast.literal_eval(value)
        except (ValueError, SyntaxError):
            pass
    if isinstance(value, (list, tuple)):
        value = " ".join(str(v) for v in value)
    return str(value or "")


def item_text(meta: dict, fields: tuple[str, ...] = DEFAULT_FIELDS) -> str:
    """The fields joined by ". " ('title. description' by default), HTML tags and entities removed, whitespace
    collapsed. A missing or empty field keeps its place (an empty sentence), so the default text stays what it was
    before fields were selectable: 'title.' for an item without a description."""
    text = ". ".join(_flatten(meta.get(field, "")) for field in fields)
    return " ".join(html.unescape(_TAG.sub(" ", text)).split())


def textless_items(item_ids: list[str], texts: list[str]) -> list[str]:
    """Items whose text has no letter or digit: its vector would be all zeros (tfidf) or the embedding of ".", no
    signal to quantise."""
    return [i for i, text in zip(item_ids, texts) if not any(c.isalnum() for c in text)]


def parse_fields(spec: str, meta: dict) -> tuple[str, ...]:
    """'title+brand' -> ('title', 'brand'); a field no item has is a one-line error naming the file's fields."""
    fields = tuple(spec.split("+"))
    known = list(dict.fromkeys(key for info in meta.values() for key in info))  # first-seen order
    unknown = [field for field in fields if field not in known]
    if unknown:
        raise SystemExit(f"error: --fields {spec!r}: no item has {', '.join(map(repr, unknown))}; the items' fields: "
                         f"{', '.join(known)}")
    return fields


def fit_tfidf(texts: list[str], dim: int = 256, seed: int = 0):
    """texts -> (fitted Pipeline TF-IDF -> SVD -> L2, vectors [N, min(dim, vocab - 1, N - 1)] L2-normalised).

    The fitted pipeline embeds later texts (new catalogue items) in the same space: `pipeline.transform`.
    """
    from sklearn.decomposition import TruncatedSVD
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import Normalizer, normalize

    vectorizer = TfidfVectorizer(ngram_range=(1, 2), min_df=1, sublinear_tf=True, stop_words="english")
    tfidf = vectorizer.fit_transform(texts)
    n_components = min(dim, tfidf.shape[1] - 1, len(texts) - 1)
    if n_components < 1:
        raise ValueError(f"tfidf: {len(texts)} texts with {tfidf.shape[1]} terms are too few to embed")
    svd = TruncatedSVD(n_components=n_components, random_state=seed)
    vectors = normalize(svd.fit_transform(tfidf))
    return Pipeline([("tfidf", vectorizer), ("svd", svd), ("l2", Normalizer().fit(vectors[:1]))]), vectors


def tfidf_embeddings(texts: list[str], dim: int = 256, seed: int = 0) -> np.ndarray:
    """texts -> [N, min(dim, vocab - 1, N - 1)] L2-normalised LSA vectors."""
    return fit_tfidf(texts, dim, seed)[1]


def tfidf_fit_path(embedding_path) -> Path:
    """X.npy -> X.tfidf.joblib: the fit that made X, for embedding new items in the same space."""
    return Path(embedding_path).with_suffix(".tfidf.joblib")


def load_tfidf_fit(path):
    """The pipeline `--method tfidf` saved (fit_tfidf's); anything else is one line naming --tfidf_fit and the file.
    A pickle: load only fits you wrote yourself."""
    import joblib
    from sklearn.pipeline import Pipeline

    if not Path(path).is_file():
        raise SystemExit(f"error: --tfidf_fit file not found: {path}")
    what = f"error: --tfidf_fit {path}: not a TF-IDF fit saved by minionerec.rq.text2emb --method tfidf"
    try:
        fit = joblib.load(path)
    except Exception as e:  # noqa: BLE001 - a damaged pickle raises KeyError, EOFError, UnpicklingError, ...
        raise SystemExit(f"{what} ({reason(e)})") from None
    if not isinstance(fit, Pipeline) or [name for name, _ in fit.steps] != ["tfidf", "svd", "l2"]:
        raise SystemExit(f"{what} (it holds a {type(fit).__name__})")
    return fit


def load_sentence_model(model_path: str, pooling: str, max_length: int, device: str | None):
    """SentenceTransformer from a local directory, with the pooling we ask for (not the saved one)."""
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.modules import Pooling, Transformer

    if not Path(model_path, "config.json").is_file():
        raise SystemExit(f"error: --model_path {model_path!r}: no config.json there (a local model directory is "
                         "needed; nothing is downloaded). Use --method tfidf without a model.")
    transformer = Transformer(model_path, max_seq_length=max_length)
    if transformer.tokenizer.pad_token is None:  # decoder-only tokenizers may lack one
        transformer.tokenizer.pad_token = transformer.tokenizer.eos_token
    pool = Pooling(transformer.get_embedding_dimension(), pooling_mode=pooling)
    return SentenceTransformer(modules=[transformer, pool], device=device or None)


def sentence_embeddings(texts: list[str], model_path: str, pooling: str = "mean", batch_size: int = 64,
                        max_length: int = 256, normalize: bool = True, device: str = "") -> np.ndarray:
    """[N, H] float32; each accelerate process embeds a contiguous shard, the results are gathered in order."""
    from accelerate import PartialState
    from accelerate.utils import gather_object

    state = PartialState()
    model = load_sentence_model(model_path, pooling, max_length, device or str(state.device))
    with state.split_between_processes(list(range(len(texts)))) as shard:
        part = model.encode([texts[i] for i in shard], batch_size=batch_size, normalize_embeddings=normalize,
                            convert_to_numpy=True, show_progress_bar=state.is_main_process)
    if state.num_processes == 1:
        return part.astype(np.float32)
    rows = gather_object([part])  # shards in process order == item order
    return np.concatenate(rows).astype(np.float32)


def causal_lm_embeddings(texts: list[str], model_path: str, batch_size: int = 64, max_length: int = 256,
                         normalize: bool = True, device: str = "") -> np.ndarray:
    """[N, H] float32: per text, the mean of the causal LM's last hidden states over its real (unpadded) tokens.

    The LM head is not loaded (AutoModel: the decoder stack). Each accelerate process embeds a contiguous
    shard; the results are gathered in order."""
    import torch
    from accelerate import PartialState
    from accelerate.utils import gather_object
    from transformers import AutoModel, AutoTokenizer

    if not Path(model_path, "config.json").is_file():
        raise SystemExit(f"error: --model_path {model_path!r}: no config.json there (a local causal LM directory is "
                         "needed; nothing is downloaded, e.g. make pretrained -> models/SmolLM2-135M)")
    state = PartialState()
    device = device or str(state.device)
    tokenizer = AutoTokenizer.from_pretrained(model_path)
    if tokenizer.pad_token is None:  # decoder-only tokenizers may lack one; masked out below anyway
        tokenizer.pad_token = tokenizer.eos_token
    model = AutoModel.from_pretrained(model_path, dtype=torch.float32).to(device).eval()
    parts = []
    with state.split_between_processes(list(range(len(texts)))) as shard, torch.no_grad():
        for start in range(0, len(shard), batch_size):
            batch = tokenizer([texts[i] for i in shard[start:start + batch_size]], padding=True, truncation=True,
                              max_length=max_length, return_tensors="pt").to(device)
            hidden = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask).last_hidden_state  # [B, T, H]
            mask = batch.attention_mask.unsqueeze(-1).to(hidden.dtype)  # [B, T, 1]
            pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1)  # [B, H]
            if normalize:
                pooled = torch.nn.functional.normalize(pooled, dim=-1)
            parts.append(pooled.float().cpu().numpy())
    hidden_size = model.config.hidden_size
    part = np.concatenate(parts) if parts else np.zeros((0, hidden_size), np.float32)
    if state.num_processes == 1:
        return part.astype(np.float32)
    return np.concatenate(gather_object([part])).astype(np.float32)  # shards in process order == item order


def embed(args: Args, texts: list[str], fit=None) -> np.ndarray:
    """texts -> [N, D] with args.method: with a saved tfidf `fit`, its transform; a new tfidf fit is saved beside
    the output."""
    if fit is not None:
        try:
            return fit.transform(texts).astype(np.float32)
        except (ValueError, AttributeError) as e:  # e.g. NotFittedError: a pipeline saved before it was fitted
            raise SystemExit(f"error: --tfidf_fit {args.tfidf_fit}: cannot embed with it ({reason(e)})") from None
    if args.method == "tfidf":
        import joblib

        pipeline, embeddings = fit_tfidf(texts, args.dim, args.seed)
        with atomic_path(tfidf_fit_path(args.output_path)) as tmp:
            joblib.dump(pipeline, tmp)
        return embeddings
    if args.method == "causal_lm":
        return causal_lm_embeddings(texts, args.model_path, args.batch_size, args.max_length, args.normalize,
                                    args.device)
    return sentence_embeddings(texts, args.model_path, args.pooling, args.batch_size, args.max_length,
                               args.normalize, args.device)


def throughput_line(method: str, n: int, seconds: float, device: str = "") -> str:
    """'[text2emb] 3,459 items in 12.3 s: 281 items/s (sentence_transformers, cpu)' (all processes together)."""
    if method == "tfidf":
        device = "cpu"
    else:
        from accelerate import PartialState

        state = PartialState()  # the device the models ran on when --device is "" (see sentence_embeddings)
        device = (device or str(state.device)) + (f" x {state.num_processes} processes"
                                                  if state.num_processes > 1 else "")
    rate = n / max(seconds, 1e-9)
    rate_text = f"{rate:,.0f}" if rate >= 100 else f"{rate:.3g}"  # a big LM on CPU runs below 1 item/s
    return f"[text2emb] {n:,} items in {seconds:.1f} s: {rate_text} items/s ({method}, {device})"


def check_args(args: Args) -> None:
    """Every flag, before item.json is read or anything is written."""
    if not args.item_meta_path or not args.output_path:
        raise SystemExit("error: --item_meta_path and --output_path are required")
    if args.method not in METHODS:
        raise SystemExit(f"error: --method must be one of {', '.join(METHODS)}, got {args.method!r}")
    if args.pooling not in ("mean", "lasttoken"):
        raise SystemExit(f"error: --pooling must be mean or lasttoken, got {args.pooling!r}")
    if args.dim < 1:
        raise SystemExit(f"error: --dim must be an integer >= 1 (the SVD components of --method tfidf), got {args.dim}")
    if args.batch_size < 1 or args.max_length < 1:
        raise SystemExit(f"error: --batch_size and --max_length must be integers >= 1, got {args.batch_size} and "
                         f"{args.max_length}")
    for flag, methods in METHOD_FLAGS.items():
        if getattr(args, flag) != getattr(Args, flag) and args.method not in methods:
            raise SystemExit(f"error: --{flag} applies to --method {' or '.join(methods)} only, not to --method "
                             f"{args.method}; drop it or change --method")
    if args.tfidf_fit and (args.dim != Args.dim or args.seed != Args.seed):
        raise SystemExit("error: --dim and --seed make a new TF-IDF fit; with --tfidf_fit the saved fit is used "
                         "as it is: drop them")
    if args.method in ("sentence_transformers", "causal_lm") and not args.model_path:
        raise SystemExit("error: --model_path (a local model directory) is required, or use --method tfidf")
    check_output(args)


def check_output(args: Args) -> None:
    """--output_path (and the .ids.json and .tfidf.joblib beside it) can be written and is no input."""
    if Path(args.output_path).is_dir():
        raise SystemExit(f"error: --output_path {args.output_path}: is a directory, not a file")
    writable_dir(str(Path(args.output_path).parent), "output_path")
    outputs = [Path(args.output_path), ids_path(args.output_path)]
    if args.method == "tfidf" and not args.tfidf_fit:  # a new fit is saved
        outputs.append(tfidf_fit_path(args.output_path))
    for flag in ("item_meta_path", "tfidf_fit"):
        path = getattr(args, flag)
        if path and Path(path).resolve() in {p.resolve() for p in outputs}:
            raise SystemExit(f"error: --output_path {args.output_path} would overwrite --{flag} {path} (or write "
                             "beside it under its name); choose another path")


def main(args: Args) -> Path | None:
    check_args(args)
    fit = load_tfidf_fit(args.tfidf_fit) if args.tfidf_fit else None
    try:
        meta = load_item_meta(args.item_meta_path)
    except DataError as e:
        raise SystemExit(f"error: {e}") from None
    fields = parse_fields(args.fields, meta)
    item_ids = list(meta)
    texts = [item_text(meta[i], fields) for i in item_ids]
    empty = textless_items(item_ids, texts)
    if empty:
        raise SystemExit(f"error: {args.item_meta_path}: item {empty[0]} has an empty {' and '.join(fields)} "
                         f"({len(empty)} item(s) in all)")
    start = time.perf_counter()
    embeddings = embed(args, texts, fit)
    if args.method != "tfidf":
        from accelerate import PartialState

        if not PartialState().is_main_process:
            return None
    print(throughput_line(args.method, len(texts), time.perf_counter() - start, args.device), flush=True)
    path = save_embeddings(item_ids, embeddings, args.output_path)
    print(f"wrote {path} {embeddings.shape} and {ids_path(path)}", flush=True)
    return path


if __name__ == "__main__":
    run(main, Args)
