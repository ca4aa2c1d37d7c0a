"""The notebook 08 app without a browser: uploads (ipywidgets 8 format, simulated with
``set_state``), the model picker's four choices and their messages, streaming into the four
panels, panels emptied for a new image, a shrunk upload that says so, search, errors shown instead
of swallowed, and the exercise checker."""

from __future__ import annotations

import io
import json
import socket
import threading

import pytest
import torch

from cotlib import checks, images, infer, models, stages, widgets
from cotlib.widgets import loading

PHOTOS = images.SAMPLE_PHOTOS_DIR


@pytest.fixture(scope="module")
def stand_in(tiny_cache):
    """The memorised stand-in, loaded once (built once per cache folder)."""
    return widgets.load_model("stand-in")


@pytest.fixture
def app(stand_in, tmp_path):
    """An app with the stand-in preloaded and an empty run folder."""
    return widgets.TryApp(run=tmp_path, loaded={"stand-in": stand_in}, choice="stand-in")


def _body(app, stage):
    return app.panels.bodies[stage].value


# ---- uploads ----------------------------------------------------------------------------------


def test_first_upload_reads_the_ipywidgets_8_value():
    value = tuple(widgets.fake_upload(b"abc", name="a.png")) + tuple(
        widgets.fake_upload(b"def", name="b.png"))
    assert isinstance(value[0]["content"], memoryview)  # as the browser sends it
    name, data = widgets.first_upload(value)
    assert (name, data) == ("a.png", b"abc") and type(data) is bytes
    assert widgets.first_upload(()) is None


def test_read_upload_gives_an_rgb_image_or_a_clear_message():
    image, name = widgets.read_upload(widgets.fake_upload(PHOTOS / "coffee.jpg"))
    assert (name, image.mode) == ("coffee.jpg", "RGB")
    with pytest.raises(widgets.WidgetError, match=r"notes\.txt: not an image.*PNG or JPEG"):
        widgets.read_upload(widgets.fake_upload(b"my shopping list", name="notes.txt"))
    with pytest.raises(widgets.WidgetError, match="no file uploaded yet"):
        widgets.read_upload(())


def test_real_filewidget_state_round_trip():
    import ipywidgets as w

    upload, seen = w.FileUpload(), []
    upload.observe(lambda change: seen.append(change["new"]), "value")
    upload.set_state({"value": widgets.fake_upload(PHOTOS / "rocket.jpg")})
    assert len(seen) == 1 and widgets.read_upload(upload.value)[1] == "rocket.jpg"


# ---- the model picker -------------------------------------------------------------------------


def test_stand_in_writes_the_four_tags_for_its_photo(stand_in):
    assert stand_in.label.startswith("stand-in: a random tiny model")
    assert "chelsea" in stand_in.label
    assert "parameters" in stand_in.describe()
    a = widgets.answer(stand_in, images.load_sample_photo(widgets.DEFAULT_PHOTO),
                       widgets.DEFAULT_QUESTION)
    assert a.answer.ok and a.answer.text.strip() == widgets.STAND_IN_TRACE.strip()
    assert [r.stop for r in a.answer.stages.values()] == ["tag"] * 4


def test_stand_in_is_cached(stand_in, tiny_cache):
    again = widgets.load_model("stand-in")
    assert again.source == stand_in.source
    info = json.loads((tiny_cache / "stand-in" / again.source.rsplit("/", 1)[1]
                       / "cotlib_stand_in.json").read_text())
    assert info["loss"] < 0.05 and info["photo"] == widgets.DEFAULT_PHOTO


def test_shipped_base_and_stand_in_are_two_choices_with_their_own_names(monkeypatch):
    assert {"stand-in", "shipped base"} <= set(widgets.MODEL_CHOICES)
    monkeypatch.setenv("COTLIB_FAST", "1")
    assert widgets.default_choice() == "stand-in"
    monkeypatch.setenv("COTLIB_FAST", "0")
    assert widgets.default_choice() == "shipped base"


def test_shipped_base_loads_the_pretrained_folder_or_says_what_is_missing(tiny_cache, tmp_path):
    folder = models.tiny("idefics3")  # any model folder stands in for data/base here
    loaded = widgets.load_model("shipped base", base=folder)
    assert loaded.label.startswith("shipped base: the course's pretrained tiny model")
    assert loaded.source == str(folder)
    with pytest.raises(widgets.WidgetError, match="no shipped base in .*pick 'stand-in'"):
        widgets.load_model("shipped base", base=tmp_path / "base")


def test_the_real_shipped_base_loads_verified():
    loaded = widgets.load_model("shipped base")
    assert loaded.source == str(loading.env.BASE_DIR) and loaded.parameters > 1_000_000


def test_adapter_missing_says_train_one_first(tmp_path):
    with pytest.raises(widgets.WidgetError, match="train one in notebook 05 first"):
        widgets.load_model("your adapter", run=tmp_path)


@pytest.mark.filterwarnings("ignore:.*is_gradient_checkpointing")
def test_adapter_loads_through_cotlib_train(tiny_cache, tmp_path):
    from peft import LoraConfig, get_peft_model

    base = models.tiny("idefics3")
    model, processor = models.load(base, dtype="float32")
    peft_model = get_peft_model(model, LoraConfig(r=2, target_modules=["q_proj", "v_proj"]))
    peft_model.save_pretrained(tmp_path / "adapter")
    processor.save_pretrained(tmp_path / "adapter")
    loaded = widgets.load_model("your adapter", run=tmp_path)
    assert loaded.label.startswith("your adapter:") and "LoRA on" in loaded.label
    a = widgets.answer(loaded, images.load_sample_photo("coffee"), "What?", max_new_tokens=2)
    assert set(a.answer.stages) == set(stages.STAGES)


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_hub_id_only_online(monkeypatch):
    def no_network(*args, **kwargs):
        raise AssertionError("HF_HUB_OFFLINE=1 must refuse before any connection")

    monkeypatch.setattr(loading.socket, "create_connection", no_network)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(widgets.WidgetError, match="HF_HUB_OFFLINE=1"):
        widgets.load_model("hub id", hub_id=widgets.EXAMPLE_HUB_ID)
    monkeypatch.undo()
    monkeypatch.delenv("HF_HUB_OFFLINE")
    with pytest.raises(widgets.WidgetError, match="type a hub id first"):
        widgets.load_model("hub id", hub_id="  ")
    with pytest.raises(widgets.WidgetError, match="unknown model choice"):
        widgets.load_model("gpt-9")


def test_hub_id_with_an_unreachable_hub_fails_at_once_with_a_clear_message(monkeypatch):
    monkeypatch.delenv("HF_HUB_OFFLINE")
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{_closed_port()}")
    loads = []
    monkeypatch.setattr(loading.models, "load", lambda *a, **k: loads.append(a))
    with pytest.raises(widgets.WidgetError, match="hub cannot be reached .*ConnectionRefused"):
        widgets.load_model("hub id", hub_id=widgets.EXAMPLE_HUB_ID)
    assert loads == []  # never reached the download (and its minutes of retries)


def test_hub_check_answers_for_a_listening_hub_and_gives_up_on_a_silent_one(monkeypatch):
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        assert widgets.hub_unreachable(f"http://127.0.0.1:{server.getsockname()[1]}") is None
    release = threading.Event()

    def hangs(*args, **kwargs):  # a name lookup that never returns (no DNS server answers)
        release.wait(30)
        raise OSError("released")

    monkeypatch.setattr(loading.socket, "create_connection", hangs)
    try:
        why = widgets.hub_unreachable("https://hub.invalid", timeout=0.2)
    finally:
        release.set()
    assert why == "no answer from hub.invalid:443 within 0.2 s"


def test_cpu_threads_restores_the_setting(stand_in):
    before = torch.get_num_threads()
    with widgets.cpu_threads(stand_in.model):
        assert torch.get_num_threads() == 1
    assert torch.get_num_threads() == before


# ---- streaming ----------------------------------------------------------------------------------


def test_answer_streams_growing_text_stage_by_stage(stand_in):
    seen, ended = [], []
    widgets.answer(stand_in, images.load_sample_photo(widgets.DEFAULT_PHOTO),
                   widgets.DEFAULT_QUESTION, on_token=lambda s, t: seen.append((s, t)),
                   on_stage_end=ended.append)
    assert [d.stage for d in ended] == list(stages.STAGES)
    for done in ended:
        texts = [t for s, t in seen if s == done.stage]
        assert len(texts) == done.tokens > 1
        assert all(b.startswith(a) for a, b in zip(texts, texts[1:]))  # only ever grows
        assert texts[-1].strip() == done.text
        assert f"{done.tokens} tokens" in done.stats() and "stop: tag" in done.stats()


def test_panels_update_while_a_stage_is_written(stand_in):
    panels = widgets.StagePanels(interval=0.0)
    changes = {s: 0 for s in stages.STAGES}
    for s in stages.STAGES:
        panels.bodies[s].observe(lambda c, s=s: changes.__setitem__(s, changes[s] + 1), "value")
    widgets.answer(stand_in, images.load_sample_photo(widgets.DEFAULT_PHOTO),
                   widgets.DEFAULT_QUESTION, on_token=panels.write, on_stage_end=panels.finish)
    assert all(n > 5 for n in changes.values()), changes  # many updates, not one at the end
    assert panels.texts()["CAPTION"] == stages.parse(widgets.STAND_IN_TRACE).stages["CAPTION"]


# ---- the app ------------------------------------------------------------------------------------


def test_app_starts_with_a_shipped_photo_and_answers_without_an_upload(app):
    assert app.image_name == "chelsea.jpg" and app.preview.value[:3] == b"\xff\xd8\xff"
    app.button.click()
    assert app.error is None and app.outcome is not None
    expected = stages.parse(widgets.STAND_IN_TRACE).stages
    assert app.texts() == expected
    for s in stages.STAGES:
        assert "stop: tag" in app.panels.footers[s].value
    assert "well formed" in app.summary.value and "tokens/s" in app.summary.value
    assert "done: chelsea.jpg" in app.status.value
    assert "loaded: stand-in: a random tiny model" in app.model_info.value
    assert not app.button.disabled and app.button.description == "Answer"


def test_a_new_image_empties_the_panels_of_the_previous_answer(app):
    app.button.click()
    assert app.texts()["CAPTION"] and "tokens" in app.panels.footers["CAPTION"].value
    app.upload.set_state({"value": widgets.fake_upload(PHOTOS / "rocket.jpg")})
    assert app.texts() == {s: "" for s in stages.STAGES} and app.outcome is None
    for s in stages.STAGES:
        assert "waiting" in _body(app, s) and app.panels.footers[s].value == ""
    assert app.summary.value == ""
    app.button.click()
    app.photo.value = "coffee.jpg"  # a shipped photo too
    assert all("waiting" in _body(app, s) for s in stages.STAGES)


def test_a_large_upload_says_it_was_shrunk_and_from_what(app):
    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", (3000, 2000), "navy").save(buffer, "JPEG")
    app.upload.set_state({"value": widgets.fake_upload(buffer.getvalue(), name="big.jpg")})
    assert app.image.size == (2048, 1365)
    info = app.image_info.value
    assert "big.jpg (uploaded): 2048×1365 px (shrunk from 3000×2000: at most 2048 px a side)" \
        in info
    assert "shrunk from 3000×2000" in app.status.value
    app.upload.set_state({"value": widgets.fake_upload(PHOTOS / "coffee.jpg", name="small.jpg")})
    assert "shrunk" not in app.image_info.value and "shrunk" not in app.status.value


def test_app_uses_the_uploaded_photo(app):
    app.upload.set_state({"value": widgets.fake_upload(PHOTOS / "grace_hopper.jpg")})
    assert app.image_name == "grace_hopper.jpg (uploaded)"
    assert app.image.size == images.load_image(PHOTOS / "grace_hopper.jpg").size
    app.button.click()
    assert app.error is None and set(app.panels.done) == set(stages.STAGES)
    for s in stages.STAGES:  # every panel shows something, even a stage the model cut short
        assert "waiting" not in _body(app, s) and "tokens" in app.panels.footers[s].value
    assert "done: grace_hopper.jpg (uploaded)" in app.status.value
    app.photo.value = "coffee.jpg"  # the dropdown switches back to a shipped photo
    assert app.image_name == "coffee.jpg"
    with pytest.raises(widgets.WidgetError, match="choose one of astronaut, chelsea"):
        app.use_photo("mona_lisa")


def test_a_non_image_upload_shows_a_clear_message_and_keeps_the_photo(app):
    app.upload.set_state({"value": widgets.fake_upload(b"%PDF-1.7 ...", name="paper.pdf")})
    assert "paper.pdf: not an image" in app.status.value
    assert "PDF" in app.status.value and "still using chelsea.jpg" in app.status.value
    assert app.image_name == "chelsea.jpg"
    app.button.click()
    assert app.outcome is not None and app.outcome.answer.ok


def test_app_with_search_fills_every_panel(app):
    app.search.value, app.n.value = True, 2
    app.button.click()
    assert app.error is None and app.outcome.tree is not None
    assert [len(step.candidates) for step in app.outcome.tree.steps] == [2] * 4
    for s in stages.STAGES:
        assert "best of 2 candidates" in app.panels.footers[s].value
    assert "beam search" in app.summary.value


def test_app_messages_for_the_other_choices(app, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    app.picker.value = "your adapter"
    assert "train one in notebook 05 first" in app.model_info.value
    app.button.click()
    assert "train one in notebook 05 first" in app.status.value and app.outcome is None
    app.picker.value = "hub id"
    assert "offline" in app.model_info.value
    app.button.click()
    assert "HF_HUB_OFFLINE=1" in app.status.value
    assert "stand-in" in app.loaded  # a failed choice does not drop the loaded model
    app.picker.value = "stand-in"
    app.question.value = "  "
    app.button.click()
    assert "type a question first" in app.status.value


def test_unexpected_errors_are_shown_not_swallowed(tmp_path):
    broken = widgets.LoadedModel(torch.nn.Linear(2, 2), None, "stand-in", "broken", "nowhere")
    app = widgets.TryApp(run=tmp_path, loaded={"stand-in": broken}, choice="stand-in")
    app.button.click()
    assert app.outcome is None and "⚠️" in app.status.value
    assert app.error and "Traceback" in app.error
    assert not app.button.disabled  # ready for another try


# ---- the exercise -------------------------------------------------------------------------------


def test_checker_accepts_the_library_and_explains_mistakes(capsys):
    assert checks.check_first_upload(widgets.first_upload)

    def stub(value):
        raise NotImplementedError

    assert not checks.check_first_upload(stub)
    assert "not done yet" in capsys.readouterr().out
    assert not checks.check_first_upload(lambda v: (v[0]["name"], v[0]["content"]) if v else None)
    assert "bytes(entry['content'])" in capsys.readouterr().out
    assert not checks.check_first_upload(lambda v: (v[-1]["name"], bytes(v[-1]["content"])))
    assert "first file" in capsys.readouterr().out


def test_stand_in_decodes_garbage_for_another_photo(stand_in):
    """The honest point of the notebook: it memorised, it does not see."""
    other = widgets.answer(stand_in, images.load_sample_photo("rocket"), widgets.DEFAULT_QUESTION,
                           max_new_tokens=24)
    assert other.answer.text.strip() != widgets.STAND_IN_TRACE.strip()
    assert isinstance(other.answer, infer.StagedAnswer)


def test_the_package_reexports_its_names_and_keeps_modules_short():
    """cotlib.widgets is a package of short modules; notebook 08 and the checks keep writing
    ``widgets.X``."""
    from pathlib import Path

    folder = Path(widgets.__file__).parent
    lengths = {p.name: len(p.read_text().splitlines()) for p in folder.glob("*.py")}
    assert max(lengths.values()) <= 600, lengths
    assert all(hasattr(widgets, name) for name in widgets.__all__)
    assert widgets.TryApp.__module__ == "cotlib.widgets.app"
    assert widgets.load_model is loading.load_model
