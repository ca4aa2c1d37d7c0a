"""The model-family registry: every entry's facts hold for the model it builds, and each family
goes the whole way offline — build, save, reload with ``from_pretrained``, generate, one LoRA
training step through ``train.build_trainer``. LLaVA is the family added as the proof that a new
family is one registry entry (the family-parametrised tests in test_models, test_infer and
test_train run on it too)."""

from __future__ import annotations

import pytest
import torch
from PIL import Image

from cotlib import families, infer, models, stages, train


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module", params=families.names())
def built(request, tiny_cache):
    """A family's tiny twin, reloaded by transformers' own Auto classes (not ``models.load``)."""
    from transformers import AutoModelForImageTextToText, AutoProcessor

    folder = models.tiny(request.param)
    model = AutoModelForImageTextToText.from_pretrained(folder, dtype=torch.float32).eval()
    return families.get(request.param), folder, model, AutoProcessor.from_pretrained(folder)


def test_registry_names_match_models_families():
    assert models.FAMILIES == families.names() and len(set(families.names())) >= 3
    with pytest.raises(KeyError, match="choose one of"):
        families.get("no-such-family")


def test_entry_describes_the_model_it_builds(built):
    family, _, model, processor = built
    assert model.config.model_type in family.model_types
    assert families.find(model) is family and families.for_processor(processor) is family
    assert train.family_of(model) == family.name
    for role, path in family.parts.items():
        assert list(model.get_submodule(path).parameters()), (role, path)
    assert family.build_tiny is not None and set(family.specials) <= set(
        processor.tokenizer.get_vocab())
    has_deltas = any(hasattr(m, "rope_deltas") for m in model.modules())
    assert family.rope_deltas == has_deltas
    assert (infer._rope_owner(model) is not None) == family.rope_deltas


def test_saved_folder_reloads_and_generates_from_an_image(built):
    family, folder, model, processor = built
    assert (folder / "config.json").exists() and (folder / "cotlib_tiny.json").exists()
    prompt = models.chat_prompt(processor, "How many red objects are there?")
    inputs = models.encode(processor, [Image.new("RGB", (160, 120), "white")], [prompt])
    assert (inputs["input_ids"] == model.config.image_token_id).sum() > 0
    with torch.no_grad():
        out = model.generate(**inputs, max_new_tokens=5, min_new_tokens=5, do_sample=False)
    assert out.shape[1] == inputs["input_ids"].shape[1] + 5


def test_image_size_rule_and_preset_edge(built):
    family, _, _, processor = built
    now = train.set_image_size(processor)  # nothing asked: reports what is in effect
    assert now["longest_edge"] >= models.TINY_IMAGE_SIZE  # the tiny twins take a whole scene
    edge = family.preset_edge(1024, train.smolvlm_image_tokens(1024, True))
    assert edge is None or edge > 0
    if edge is None:  # a fixed-size vision tower refuses another size, naming the fix
        with pytest.raises(train.TrainError, match="leave longest_edge unset"):
            train.set_image_size(processor, 2 * now["longest_edge"])


def test_one_lora_step_through_build_trainer(built, tmp_path):
    family = built[0]
    rows = train.synthetic_traces(n=4)
    prep = train.build_trainer(rows, model=f"tiny-{family.name}", output_dir=str(tmp_path),
                               batch_size=2, grad_accum=1, max_steps=1, lora_r=4,
                               warmup=0, lr_scheduler="constant", logging_steps=1,
                               save_steps=1000, verbose=False)
    model = prep.trainer.model
    targets = train.lora_targets(model.get_base_model())
    assert targets and all(t.startswith(family.language + ".") for t in targets)
    lora = {n: p.detach().clone() for n, p in model.named_parameters() if "lora_B" in n}
    frozen_vision = [p for n, p in model.get_base_model().get_submodule(
        family.vision).named_parameters()]
    assert lora and not any(p.requires_grad for p in frozen_vision)
    prep.trainer.train()
    assert prep.trainer.state.global_step == 1 and prep.recorder.losses
    assert all(torch.isfinite(torch.tensor(loss)) for _, loss in prep.recorder.losses)
    changed = [n for n, p in model.named_parameters()
               if n in lora and not torch.equal(p, lora[n])]
    assert changed, "the LoRA step changed no adapter weight"


def test_staged_decoding_runs_on_every_family(built):
    _, _, model, processor = built
    result = infer.generate_stages(model, processor, Image.new("RGB", (192, 192), "white"),
                                   "How many?", force_tokens_per_stage=2)
    assert list(result.stages) == list(stages.STAGES) and result.text.count("</") == 4


def test_unknown_family_names_the_registry():
    from transformers import LlamaConfig

    with pytest.raises(train.TrainError, match="cotlib.families.REGISTRY"):
        train.family_of(LlamaConfig())
    assert families.find(LlamaConfig()) is None
    # decoding a model no entry covers still extends every family's per-token inputs
    every = {n for f in families.REGISTRY.values() for n in f.token_inputs}
    assert set(families.token_inputs(LlamaConfig())) == every and "mm_token_type_ids" in every
