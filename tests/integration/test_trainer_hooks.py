"""The GRPOTrainer subclass: pinned TRL hooks, rollout modes, mask_all_zero, loss-flag mapping."""
import inspect
import json

import pytest
import torch
import trl
from datasets import Dataset
from transformers import AutoModelForCausalLM, AutoTokenizer
from trl import GRPOTrainer

from minionerec.ranking.constrained import constrained_beam_search
from minionerec.data.formats import sid_string
from minionerec.data.prompts import Prompts
from minionerec.rl.rewards import build_reward_funcs
from minionerec.rl.trainer import MiniOneRecGRPOConfig, MiniOneRecGRPOTrainer, grpo_loss_options, select_dynamic

G = 4  # group size: small, but > 1 so groups and ranks mean something

# TRL's private hooks we override, as TRL 1.16.0 defines them. An upgrade that changes any of them
# must fail here (CI), not silently bypass constrained decoding on a cluster.
PINNED = {
    "_generate_single_turn": "(self, prompt_ids, images, multimodal_fields, num_generations, has_tool_images=False)",
    "_calculate_rewards": "(self, inputs, prompts, completions, completion_ids_list)",
    "_generate_and_score_completions": "(self, inputs: list[dict[str, torch.Tensor | typing.Any]]) "
                                       "-> dict[str, torch.Tensor | typing.Any]",
    "_get_per_token_logps_and_entropies": "(self, model, input_ids, attention_mask, logits_to_keep, batch_size=None, "
                                          "compute_entropy=False, compute_aux_loss=False, pixel_values=None, "
                                          "image_grid_thw=None, num_images=None, pixel_attention_mask=None, "
                                          "spatial_shapes=None, num_tiles=None, image_sizes=None, token_type_ids=None, "
                                          "mm_token_type_ids=None, image_position_ids=None) "
                                          "-> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]",
}
TEXT_PARAMS = 8  # our log-prob hook names TRL's text parameters and takes the multimodal ones as **multimodal


def test_trl_version_and_hook_signatures_are_pinned():
    assert trl.__version__ == "1.16.0"
    for name, signature in PINNED.items():
        assert str(inspect.signature(getattr(GRPOTrainer, name))) == signature, name
        ours = list(inspect.signature(getattr(MiniOneRecGRPOTrainer, name)).parameters.values())
        theirs = list(inspect.signature(getattr(GRPOTrainer, name)).parameters)
        if name == "_get_per_token_logps_and_entropies":
            assert [p.name for p in ours[:TEXT_PARAMS]] == theirs[:TEXT_PARAMS]
            assert len(ours) == TEXT_PARAMS + 1 and ours[-1].kind is inspect.Parameter.VAR_KEYWORD
        else:
            assert [p.name for p in ours] == theirs, name
    # TRL's generation calls the hook with these four positional arguments
    assert ("self._generate_single_turn(\n                prompt_ids, images, multimodal_fields, num_generations\n"
            in inspect.getsource(GRPOTrainer._generate))


def test_every_override_is_named_in_the_docstring():
    overrides = [n for n, v in vars(MiniOneRecGRPOTrainer).items()
                 if callable(v) and hasattr(GRPOTrainer, n) and n != "__init__"]
    assert sorted(overrides) == sorted(PINNED)
    for name in overrides:
        assert f"`{name}`" in MiniOneRecGRPOTrainer.__doc__


def test_loss_flags_map_onto_trl_options():
    assert grpo_loss_options(False, False) == {"loss_type": "grpo", "importance_sampling_level": "token"}
    assert grpo_loss_options(True, False) == {"loss_type": "dapo", "importance_sampling_level": "token"}
    assert grpo_loss_options(False, True) == {"loss_type": "grpo", "importance_sampling_level": "sequence"}
    with pytest.raises(ValueError, match="--dapo and --gspo are exclusive"):
        grpo_loss_options(True, True)


def test_select_dynamic_keeps_target_then_most_frequent():
    x, y, z, t = ("x",), ("y",), ("z",), ("t",)
    samples = [x, x, t, y, x, z]  # counts: x 3, t 1, y 1, z 1
    assert select_dynamic(samples, t, 4) == [t, x, y, z]
    assert select_dynamic(samples, t, 5) == [t, x, y, z, x]  # second round: only x has copies left
    assert select_dynamic([t, t, t, x], t, 2) == [t, t]
    assert select_dynamic([x, x, y], t, 2) == [x, y]  # target never sampled


@pytest.fixture(scope="module")
def setup(demo_data, tiny_model_dir, tmp_path_factory):
    sid_index = json.loads((demo_data / "index" / "Demo.index.json").read_text())
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir, padding_side="left")
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    valid_paths = {sid_string(s) + "\n" for s in sid_index.values()}
    histories = [list(sid_index.values())[k:k + 3] for k in (0, 10)]
    prompt_texts = [Prompts().sid_history([sid_string(s) for s in h]) for h in histories]
    out = tmp_path_factory.mktemp("hooks")
    return dict(sid_index=sid_index, tokenizer=tokenizer, model=model, valid=valid_paths, prompts=prompt_texts, out=out)


def make_trainer(setup, model=None, temperature=1.0, **options):
    funcs = build_reward_funcs("rule", G, setup["sid_index"], setup["tokenizer"])
    config = MiniOneRecGRPOConfig(output_dir=str(setup["out"]), per_device_train_batch_size=2 * G, num_generations=G,
                                  max_steps=1, beta=0.0, report_to=[], bf16=False, reward_weights=[1.0] * len(funcs),
                                  logging_steps=1, temperature=temperature, **options)
    return MiniOneRecGRPOTrainer(model=model or setup["model"], reward_funcs=funcs, args=config, processing_class=setup["tokenizer"],
                                 train_dataset=Dataset.from_dict({"prompt": ["x"], "target": ["y"]}), sid_index=setup["sid_index"])


def grouped_ids(setup):
    ids = setup["tokenizer"](setup["prompts"], add_special_tokens=False)["input_ids"]
    return [p for p in ids for _ in range(G)]  # each prompt G times back to back, as TRL sends them


def decode(setup, completions):
    return setup["tokenizer"].batch_decode(completions, skip_special_tokens=True)


def test_beam_search_gives_distinct_valid_sids_in_beam_order(setup):
    trainer = make_trainer(setup, beam_search=True)
    completion_ids, logprobs = trainer._generate_single_turn(grouped_ids(setup), None, {}, G)
    texts = decode(setup, completion_ids)
    assert logprobs is None and len(texts) == 2 * G
    assert all(t in setup["valid"] for t in texts)
    assert all(c[-1] == setup["tokenizer"].eos_token_id for c in completion_ids)
    for g in range(2):
        assert len(set(texts[g * G:(g + 1) * G])) == G  # distinct within the group
    # same ranking as the evaluation decoder (num_beams = G)
    expected = constrained_beam_search(setup["model"], setup["tokenizer"], setup["prompts"], trainer.trie, G)
    assert [t.strip() for t in texts] == expected[0] + expected[1]


def test_add_gt_puts_the_target_into_each_group(setup):
    plain = make_trainer(setup)._generate_single_turn(grouped_ids(setup), None, {}, G)[0]
    plain = [t.strip() for t in decode(setup, plain)]
    trainer = make_trainer(setup, beam_search=True, add_gt=True)
    absent = next(sid_string(s) for s in setup["sid_index"].values() if sid_string(s) not in plain[G:])
    trainer._batch_targets = [plain[1]] * G + [absent] * G  # group 1: target already beamed; group 2: not
    texts = [t.strip() for t in decode(setup, trainer._generate_single_turn(grouped_ids(setup), None, {}, G)[0])]
    assert texts[:G] == plain[:G]  # untouched: no duplicate target
    assert texts[G:] == plain[G:2 * G - 1] + [absent]  # the last beam made room


def test_sampling_and_dynamic_sampling_give_valid_sids(setup):
    torch.manual_seed(0)
    for options in ({"beam_search": False}, {"beam_search": False, "dynamic_sampling": True}):
        trainer = make_trainer(setup, **options)
        trainer._batch_targets = [sid_string(list(setup["sid_index"].values())[5])] * (2 * G)
        texts = decode(setup, trainer._generate_single_turn(grouped_ids(setup), None, {}, G)[0])
        assert len(texts) == 2 * G and all(t in setup["valid"] for t in texts), options


def test_ungrouped_prompts_fail_with_one_line(setup):
    trainer = make_trainer(setup)
    ids = setup["tokenizer"](setup["prompts"], add_special_tokens=False)["input_ids"]
    with pytest.raises(ValueError, match=r"expected each prompt repeated num_generations=4 times back to back"):
        trainer._generate_single_turn([ids[0], ids[1], ids[0], ids[1]], None, {}, G)


def test_mask_all_zero_drops_groups_without_reward(setup):
    trainer = make_trainer(setup, beam_search=True, mask_all_zero=True)
    trainer.model.train()
    beams = constrained_beam_search(setup["model"], setup["tokenizer"], setup["prompts"], trainer.trie, G)
    unreachable = next(sid_string(s) for s in setup["sid_index"].values() if sid_string(s) not in beams[1])
    inputs = ([{"prompt": setup["prompts"][0], "target": beams[0][2]}] * G  # group 1: one hit -> kept
              + [{"prompt": setup["prompts"][1], "target": unreachable}] * G)  # group 2: all zero -> dropped
    out = trainer._generate_and_score_completions(inputs)
    kept = out["completion_mask"].sum(dim=1) > 0  # [2G]
    assert kept.tolist() == [True] * G + [False] * G
    assert out["num_items_in_batch"].item() == out["completion_mask"].sum().item()
    assert trainer._metrics["train"]["frac_groups_all_zero"] == [0.5]


def test_beam_search_needs_enough_distinct_sids(setup):
    small = dict(list(setup["sid_index"].items())[:3])  # 3 SIDs < G = 4 beams
    with pytest.raises(ValueError, match=r"num_generations=4 distinct SIDs per group; the catalogue has only 3"):
        make_trainer({**setup, "sid_index": small})


def test_completion_window_logps_equal_trls_fused_head(setup, tiny_model_dir):
    """Our log-probs, entropies and their gradients equal TRL's fused-head path (the reference) to float rounding."""
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    trainer = make_trainer(setup, model=model, temperature=0.7)  # TRL patches the fused head at this temperature
    torch.manual_seed(0)
    prompt = torch.randint(5, 300, (6, 9))
    completion = torch.randint(5, 300, (6, 4))
    input_ids = torch.cat([prompt, completion], dim=1)  # [6, 13]
    attention_mask = torch.ones_like(input_ids)
    attention_mask[:2, :3] = 0  # left-padded prompts
    attention_mask[3, -2:] = 0  # a completion that ended early
    attention_mask[4, -1:] = 0

    def run(hook):
        model.zero_grad()
        logps, entropies, _ = hook(trainer, model, input_ids, attention_mask, 4, batch_size=4, compute_entropy=True)
        (logps * torch.linspace(-1, 1, 4)).sum().add(entropies.sum()).backward()
        return logps.detach(), entropies.detach(), [p.grad.clone() for p in model.parameters()]

    ours = run(MiniOneRecGRPOTrainer._get_per_token_logps_and_entropies)
    reference = run(GRPOTrainer._get_per_token_logps_and_entropies)
    assert ours[0].shape == ours[1].shape == (6, 4)
    assert (ours[0][3, -2:] == 0).all() and (ours[1][4, -1] == 0)
    torch.testing.assert_close(ours[0], reference[0], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(ours[1], reference[1], rtol=1e-5, atol=1e-5)
    for mine, theirs in zip(ours[2], reference[2], strict=True):
        torch.testing.assert_close(mine, theirs, rtol=1e-4, atol=1e-6)
