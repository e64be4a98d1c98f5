import json

import pytest
import torch
from safetensors.torch import load_file

from wordpaint.cli.main import main
from wordpaint.errors import WordpaintError
from wordpaint.training.train import lr_at, param_groups, train


def test_train_tiny_then_resume_loses_no_step(tmp_path, capsys):
    # uninterrupted 4 steps vs 2 steps + resume to 4: identical weights, optimizer and EMA
    full = train("tiny", tmp_path / "full", show_progress=False)
    train("tiny", tmp_path / "part", max_steps=2, show_progress=False)
    assert main(["train", "--recipe", "tiny", "--out", str(tmp_path / "part"), "--resume"]) == 0
    a, b = tmp_path / "full" / "checkpoints" / "step-0000004", tmp_path / "part" / "checkpoints" / "step-0000004"
    for name in ("model.safetensors", "ema.safetensors"):
        ta, tb = load_file(a / name), load_file(b / name)
        assert all(torch.equal(ta[k], tb[k]) for k in ta), name
    assert (full / "model_index.json").is_file()
    metrics = [json.loads(l) for l in (tmp_path / "full" / "metrics.jsonl").read_text().splitlines()]
    assert metrics[0] == {"step": 0, "started": "fresh", "time": metrics[0]["time"]}
    assert any("eval" in m for m in metrics) and all("loss" in m for m in metrics[1:] if "eval" not in m)
    assert (tmp_path / "full" / "samples" / "step-0000004.png").is_file()
    # only the last keep_checkpoints survive, and no temporary folders are left behind
    names = sorted(p.name for p in (tmp_path / "full" / "checkpoints").iterdir())
    assert names == ["step-0000002", "step-0000004"]
    # a spent time limit stops after the first step with a checkpoint off the recipe's schedule
    # (checkpoint_every 2) and the pipeline written; --resume then ends where the full run did
    timed = train("tiny", tmp_path / "timed", time_limit=0, show_progress=False)
    assert "stopped at step 1 of 4 (time limit of 0 min)" in capsys.readouterr().err
    assert (timed / "model_index.json").is_file() and (tmp_path / "timed" / "checkpoints" / "step-0000001").is_dir()
    assert main(["train", "--recipe", "tiny", "--out", str(tmp_path / "timed"), "--resume"]) == 0
    events = [{k: m[k] for k in m if k in ("step", "started", "stopped")} for m in map(json.loads, (tmp_path / "timed" / "metrics.jsonl").read_text().splitlines())]
    assert [e for e in events if len(e) == 2] == [{"step": 0, "started": "fresh"}, {"step": 1, "stopped": "time limit of 0 min"},
                                                  {"step": 1, "started": "resume"}]
    c = tmp_path / "timed" / "checkpoints" / "step-0000004"
    ta, tc = load_file(a / "ema.safetensors"), load_file(c / "ema.safetensors")
    assert all(torch.equal(ta[k], tc[k]) for k in ta)


def test_sigterm_stops_with_a_checkpoint(tmp_path):
    import os
    import signal
    import subprocess
    import sys
    import time

    # SIGTERM to the whole process group, as a scheduler or a terminal sends it: the DataLoader
    # workers must leave it to the training loop instead of dying under it mid-step
    run = tmp_path / "run"
    proc = subprocess.Popen([sys.executable, "-m", "wordpaint.cli.main", "train", "--recipe", "tiny", "--out", str(run), "--max-steps", "100000",
                             "--workers", "2"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        deadline = time.monotonic() + 240
        while not (run / "checkpoints" / "step-0000002").is_dir():
            assert proc.poll() is None and time.monotonic() < deadline, proc.stderr.read() if proc.poll() is not None else "no checkpoint in 240 s"
            time.sleep(0.2)
        os.killpg(proc.pid, signal.SIGTERM)
        _, err = proc.communicate(timeout=240)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 0, err
    assert "(signal SIGTERM)" in err and "--resume" in err
    last = [json.loads(l) for l in (run / "metrics.jsonl").read_text().splitlines()][-1]
    assert last["stopped"] == "signal SIGTERM"
    # the stop's checkpoint is the step the run reached: nothing trained is lost
    assert (run / "checkpoints" / f"step-{last['step']:07d}" / "ema.safetensors").is_file()
    assert (run / "pipeline" / "model_index.json").is_file()


def test_dataloader_workers_train_the_same_weights(tmp_path):
    # batches are pure functions of the step: rendered ahead by 2 worker processes or inline,
    # a layout run (images, captions, layouts) ends with identical weights
    train("tiny_layout", tmp_path / "inline", max_steps=3, show_progress=False)
    assert main(["train", "--recipe", "tiny_layout", "--out", str(tmp_path / "workers"), "--max-steps", "3", "--workers", "2"]) == 0
    a, b = (load_file(tmp_path / d / "checkpoints" / "step-0000003" / "model.safetensors") for d in ("inline", "workers"))
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert json.loads((tmp_path / "workers" / "recipe.json").read_text())["num_workers"] == 2


@pytest.mark.parametrize("kwargs, message", [({"workers": -1}, "num_workers"), ({"mixed_precision": "fp8"}, "mixed_precision"),
                                            ({"time_limit": -1}, "time_limit"), ({"time_limit": "5"}, "time_limit")])
def test_bad_device_options_are_clear_errors(tmp_path, kwargs, message):
    with pytest.raises(ValueError, match=message):
        train("tiny", tmp_path / "x", max_steps=1, show_progress=False, **kwargs)


def test_refuses_to_overwrite_without_resume(tmp_path):
    train("tiny", tmp_path / "r", max_steps=2, show_progress=False)
    with pytest.raises(ValueError, match="--resume"):
        train("tiny", tmp_path / "r", show_progress=False)


def test_corrupt_checkpoint_is_a_clear_error(tmp_path):
    train("tiny", tmp_path / "c", max_steps=2, show_progress=False)
    (tmp_path / "c" / "checkpoints" / "step-0000002" / "model.safetensors").write_bytes(b"garbage")
    with pytest.raises(ValueError, match="corrupt weights file"):
        train("tiny", tmp_path / "c", resume=True, show_progress=False)


def test_multi_size_recipe_trains_at_each_size(tmp_path):
    from wordpaint.training.train import load_recipe

    recipe = load_recipe("tiny_layout")
    recipe.update(max_steps=2, eval_every=100, sample_every=100, data={**recipe["data"], "sizes": [32, 40]})
    (tmp_path / "r.json").write_text(json.dumps(recipe))
    out = train(str(tmp_path / "r.json"), tmp_path / "run", show_progress=False)
    assert json.loads((out / "diffusion" / "config.json").read_text())["resolution"] == 32  # the default size stays
    recipe["data"]["sizes"] = [32, 33]
    (tmp_path / "bad.json").write_text(json.dumps(recipe))
    with pytest.raises(ValueError, match=r"multiples of \d+ for this model, got \[33\]"):
        train(str(tmp_path / "bad.json"), tmp_path / "bad", show_progress=False)


def test_lr_schedule():
    r = {"lr": 1.0, "warmup_steps": 10, "max_steps": 110}
    assert lr_at(0, r) == pytest.approx(0.1) and lr_at(9, r) == pytest.approx(1.0)
    assert lr_at(60, r) == pytest.approx(0.55) and lr_at(110, r) == pytest.approx(0.1)


def test_lr_multipliers_make_parameter_groups():
    net = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.Linear(2, 2))
    groups = param_groups(net, {"1.": 20})
    assert [g["lr_mult"] for g in groups] == [1.0, 20.0]
    assert [len(g["params"]) for g in groups] == [2, 2] and groups[1]["params"][0] is net[1].weight
    assert len(param_groups(net, {})) == 1 and [g["lr_mult"] for g in param_groups(net, {"0.": 2, "1.": 3})] == [2.0, 3.0]
    with pytest.raises(WordpaintError, match="starts with more than one prefix"):
        param_groups(net, {"1.": 2, "1.w": 3})
    with pytest.raises(WordpaintError, match="no parameter of this model starts with 'layout_residuals.'"):
        param_groups(net, {"layout_residuals.": 10})
    for bad in ({"1.": 0}, {"1.": "fast"}, [("1.", 2)]):
        with pytest.raises(WordpaintError, match="lr_multipliers must map parameter-name prefixes to numbers > 0"):
            param_groups(net, bad)


def test_init_from_a_pipeline_folder(tmp_path):
    from safetensors.torch import save_file

    first = train("tiny", tmp_path / "a", max_steps=1, show_progress=False)
    path = first / "diffusion" / "model.safetensors"
    ta = {k: v + 1.0 for k, v in load_file(path).items()}  # distinctive: no fresh init looks like this
    save_file(ta, path)
    train("tiny", tmp_path / "b", max_steps=1, init_from=first, show_progress=False)
    tb = load_file(tmp_path / "b" / "checkpoints" / "step-0000001" / "model.safetensors")
    assert all(torch.allclose(ta[k], tb[k], atol=2e-2) for k in ta)  # one Adam step (lr 1e-3) from the loaded weights
    # the EMA keeps the loaded weights (no warm-up in an --init-from leg: decay 0.99 from step 0,
    # so it moved by 1% of one step; with the warm-up it would have moved by 90%), also on resume
    eb = load_file(tmp_path / "b" / "checkpoints" / "step-0000001" / "ema.safetensors")
    moved = max(float((eb[k] - ta[k]).abs().max()) for k in ta)
    step_size = max(float((tb[k] - ta[k]).abs().max()) for k in ta)
    assert moved < 0.05 * step_size, (moved, step_size)
    assert json.loads((tmp_path / "b" / "recipe.json").read_text())["ema_warmup"] is False
    train("tiny", tmp_path / "b", max_steps=2, resume=True, show_progress=False)
    assert json.loads((tmp_path / "b" / "recipe.json").read_text())["ema_warmup"] is False
    assert json.loads((tmp_path / "a" / "recipe.json").read_text())["ema_warmup"] is True
    with pytest.raises(ValueError, match="missing weights file"):
        train("tiny", tmp_path / "c", init_from=tmp_path / "nope", show_progress=False)


def test_every_shipped_recipe_names_a_buildable_model():
    # recipes for long or GPU runs are not trained by the suite: at least their model section,
    # schedule and device options must be valid, so a typo fails here and not on a leased machine
    from wordpaint.training.train import list_recipes, load_recipe, recipe_model_config

    for name in list_recipes():
        recipe = load_recipe(name)
        config = recipe_model_config(recipe)
        assert config.to_dict(), name
        assert recipe.get("mixed_precision", "no") in ("no", "bf16", "fp16"), name
        assert isinstance(recipe.get("num_workers", 0), int) and recipe["max_steps"] > 0 and recipe["batch_size"] > 0, name
        assert lr_at(recipe["max_steps"] - 1, recipe) > 0, name


@pytest.mark.parametrize("recipe_name,bundle", [("shapes48_layout_gpu", "shapes"), ("shapes_multisize_layout", "shapes"), ("emoji64_gpu", "emoji")])
def test_gpu_recipes_start_from_their_bundle(recipe_name, bundle):
    # the GPU legs continue the bundled models with --init-from: a recipe whose model lacks a
    # part the bundle has (layout residuals, pooled text) would only fail on the leased machine
    from wordpaint.models.registry import build_model
    from wordpaint.pipelines.text_to_image import BUNDLED_MODELS
    from wordpaint.training.train import load_init_weights, load_recipe, recipe_model_config

    model = build_model(recipe_model_config(load_recipe(recipe_name)))
    weights = load_init_weights(model, BUNDLED_MODELS[bundle], component="diffusion")
    assert weights and all(torch.equal(p.detach(), weights[k].to(p.dtype)) for k, p in model.state_dict().items())


def test_init_from_a_model_with_parts_the_recipe_lacks_is_a_clear_error():
    from wordpaint.models.registry import build_model
    from wordpaint.pipelines.text_to_image import BUNDLED_MODELS
    from wordpaint.training.train import load_init_weights, load_recipe, recipe_model_config

    model = build_model(recipe_model_config(load_recipe("shapes48_layout_fresh")))  # no layout_residuals
    with pytest.raises(ValueError, match="layout_residuals"):
        load_init_weights(model, BUNDLED_MODELS["shapes"], component="diffusion")


def test_recipe_extends_merges_sections_follows_chains_and_refuses_cycles(tmp_path):
    from wordpaint.training.train import load_recipe

    base = load_recipe("tiny")
    (tmp_path / "a.json").write_text(json.dumps({"extends": "tiny", "lr": 5e-4, "model": {"overrides": {"layout_channels": 13}}}))
    (tmp_path / "b.json").write_text(json.dumps({"extends": "a.json", "max_steps": 7, "samples": {"prompts": ["x"]}}))
    b = load_recipe(str(tmp_path / "b.json"))
    assert "extends" not in b
    assert b["lr"] == 5e-4 and b["max_steps"] == 7 and b["batch_size"] == base["batch_size"]
    # nested sections merge key by key: the preset stays, the override is added, lists are replaced
    assert b["model"]["preset"] == base["model"]["preset"] and b["model"]["overrides"]["layout_channels"] == 13
    assert b["samples"]["prompts"] == ["x"] and b["samples"]["num_inference_steps"] == base["samples"]["num_inference_steps"]
    assert load_recipe("tiny_layout") == {**base, "description": load_recipe("tiny_layout")["description"],
                                          "model": {**base["model"], "overrides": {**base["model"].get("overrides", {}), "layout_channels": 13}}}
    (tmp_path / "c.json").write_text(json.dumps({"extends": "d.json"}))
    (tmp_path / "d.json").write_text(json.dumps({"extends": "c.json"}))
    with pytest.raises(WordpaintError, match="extends itself"):
        load_recipe(str(tmp_path / "c.json"))
    (tmp_path / "e.json").write_text(json.dumps({"extends": 3}))
    with pytest.raises(WordpaintError, match="extends must be"):
        load_recipe(str(tmp_path / "e.json"))
    (tmp_path / "f.json").write_text(json.dumps({"extends": "no_such_recipe"}))
    with pytest.raises(WordpaintError, match="unknown recipe 'no_such_recipe'"):
        load_recipe(str(tmp_path / "f.json"))
