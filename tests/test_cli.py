"""CLI commands run in-process through wordpaint.cli.main.main."""

import json

import numpy as np
import pytest
from PIL import Image

from wordpaint.cli.main import main
from wordpaint.images import read_png_metadata


def run(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_generate_writes_png_with_metadata(capsys, tiny_dir, tmp_path):
    path = tmp_path / "out.png"
    code, out, err = run(capsys, "generate", "a red circle to the left of a blue square", "-o", str(path), "--model", str(tiny_dir), "--seed", "7")
    assert code == 0 and f"wrote {path}" in out
    assert Image.open(path).size == (32, 32)
    meta = read_png_metadata(path)
    assert meta["prompt"] == "a red circle to the left of a blue square" and meta["seed"] == 7
    assert meta["num_inference_steps"] == 2 and meta["sampler"] == "dpmpp_2m"
    # same seed, same bytes of pixels
    run(capsys, "generate", "a red circle to the left of a blue square", "-o", str(tmp_path / "again.png"), "--model", str(tiny_dir), "--seed", "7")
    assert (np.asarray(Image.open(path)) == np.asarray(Image.open(tmp_path / "again.png"))).all()


def test_generate_several(capsys, tiny_dir, tmp_path):
    code, out, _ = run(capsys, "generate", "two stars", "-o", str(tmp_path / "s.png"), "--model", str(tiny_dir), "--n", "2", "--sampler", "ddim",
                       "--guidance-interval", "0,1.5")
    assert code == 0 and (tmp_path / "s-0.png").is_file() and (tmp_path / "s-1.png").is_file()
    assert read_png_metadata(tmp_path / "s-1.png")["guidance_interval"] == [0.0, 1.5]


@pytest.mark.parametrize(
    "args,match",
    [
        (["generate", "", "--model", "TINY"], "prompt is empty"),
        (["generate", "a star", "--model", "TINY", "--steps", "0"], "num_inference_steps must be from 1"),
        (["generate", "a star", "--model", "TINY", "--guidance", "-2"], "guidance_scale must be a finite number >= 0"),
        (["generate", "a star", "--model", "TINY", "--sampler", "magic"], "unknown sampler 'magic'"),
        (["generate", "a star", "--model", "TINY", "--guidance-interval", "low"], "--guidance-interval must be LO,HI"),
        (["generate", "a star", "--model", "TINY", "--guidance-interval", "3,1"], "guidance_interval must be None or a pair"),
        (["generate", "a star", "--model", "TINY", "--size", "33"], "must be a multiple of 2"),
        (["generate", "a star", "--model", "TINY", "--negative-prompt", "word " * 100], "negative_prompt: prompt is 102 tokens"),
        (["generate", "a star", "--model", "TINY", "--text-guidance", "0"], "this model reads no layout"),
        (["generate", "a star", "--model", "TINY", "--regional-prompts"], "regional_prompts needs a layout model"),
        (["generate", "a star", "--model", "TINY", "--detail"], "this model reads no layout"),
        (["generate", "a star", "--model", "TINY", "--no-detail", "--detail-strength", "0.3"], "--detail-strength is an option of --detail"),
        (["generate", "a star", "--model", "TINY", "--strength", "0.3"], "--strength is an option of --init-image"),
        (["generate", "a star", "--model", "TINY", "--init-image", "/nonexistent.png"], "--init-image: no such file"),
        (["generate", "a star", "--model", "TINY", "--init-image", "NOTPNG"], "cannot read"),
        (["eval", "compositional", "--model", "TINY", "--limit-per-task", "1", "--no-detail", "--detail-strength", "0.3"], "option of --detail"),
        (["generate", "a star", "--model", "/nonexistent/model"], "model folder not found"),
        (["generate", "a star", "--model", "TINY", "-o", "x.jpg"], "output must be a .png"),
        (["generate", "word " * 100, "--model", "TINY"], "at most 77"),
        (["train", "--recipe", "nope", "--out", "x"], "unknown recipe 'nope'"),
        (["eval", "compositional", "--model", "TINY", "--prompts", "/nonexistent.jsonl"], "prompt file not found"),
        (["eval", "compositional", "--model", "TINY", "--limit-per-task", "1", "--regional-prompts"], "needs a layout model"),
        (["eval", "compositional", "--model", "TINY", "--limit-per-task", "1", "--size", "33"], "must be a multiple of 2"),
        (["eval", "report", "--model", "TINY", "--suite", "shapes", "--sampler", "magic"], "unknown --sampler 'magic'"),
        (["eval", "report", "--model", "TINY", "--suite", "shapes", "--schedule", "linear"], "unknown --schedule 'linear'"),
        (["eval", "report", "--model", "TINY", "--suite", "shapes", "--guidance-interval", "3,1"], "guidance_interval must be None or a pair"),
        (["eval", "report", "--model", "TINY", "--suite", "shapes", "--guidance-interval", "low"], "--guidance-interval must be LO,HI"),
        (["eval", "report", "--model", "TINY", "--suite", "shapes", "--expert-sigma", "0.2"], "--expert-sigma needs a model with an expert"),
        (["eval", "report", "--model", "TINY", "--suite", "shapes", "--expert-sigma", "-1"], "expert_sigma must be None or a finite noise level"),
        (["generate", "a star", "--model", "TINY", "--refine-strength", "2"], "refine_strength must be a number in (0, 1] or None"),
        (["eval", "report", "--model", "TINY", "--suite", "shapes", "--refine-strength", "x"], "--refine-strength must be a number in (0, 1] or off"),
        (["eval", "report", "--model", "TINY", "--suite", "shapes", "--refine-strength", "0"], "--refine-strength must be a number in (0, 1] or off"),
        (["data", "export", "shapes", "--n", "0", "--out", "OUT"], "--n must be an integer >= 1"),
        (["data", "export", "shapes", "--n", "2", "--size", "16", "--out", "OUT"], "canvas size must be an integer from 32 to 512"),
    ],
)
def test_bad_input_exit_2_one_line(capsys, tiny_dir, tmp_path, args, match):
    (tmp_path / "not.png").write_text("not an image")
    args = [str(tiny_dir) if a == "TINY" else str(tmp_path / "o") if a == "OUT" else str(tmp_path / "not.png") if a == "NOTPNG" else a
            for a in args]
    code, out, err = run(capsys, *args)
    assert code == 2
    assert match in err and err.startswith("wordpaint: error:") and err.count("\n") == 1
    assert "Traceback" not in err


def test_corrupt_model_folder_exit_2(capsys, tmp_path):
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "model_index.json").write_text("[")
    code, _, err = run(capsys, "generate", "a star", "--model", str(tmp_path / "m"))
    assert code == 2 and "corrupt model index" in err


def test_argparse_errors_exit_2(capsys):
    with pytest.raises(SystemExit) as e:
        main(["generate"])
    assert e.value.code == 2


def test_data_export_imagefolder(capsys, tmp_path):
    out = tmp_path / "ds"
    code, stdout, _ = run(capsys, "data", "export", "shapes", "--n", "12", "--out", str(out), "--size", "32")
    assert code == 0
    lines = [json.loads(l) for l in (out / "metadata.jsonl").read_text().splitlines()]
    assert len(lines) == 12
    for rec in lines:
        assert (out / rec["file_name"]).is_file() and rec["text"] == rec["caption"]
        assert {"background", "objects", "task"} <= set(rec) and rec["objects"][0]["bbox"]
    assert Image.open(out / lines[0]["file_name"]).size == (32, 32)


def test_eval_compositional_writes_report(capsys, tiny_dir, tmp_path):
    out = tmp_path / "ev"
    code, stdout, _ = run(capsys, "eval", "compositional", "--model", str(tiny_dir), "--samples-per-prompt", "1",
                          "--limit-per-task", "1", "--seed", "0", "--size", "48", "--out", str(out))
    assert code == 0 and "overall" in stdout
    res = json.loads((out / "results.json").read_text())
    assert set(res["summary"]["per_task"]) == {"single_object", "two_object", "counting", "colors", "position", "color_attr"}
    assert len(res["records"]) == 6 and res["settings"]["samples_per_prompt"] == 1
    assert res["settings"]["size"] == 48 and res["settings"]["regional_prompts"] is False
    assert (out / "results.md").read_text().startswith("### Compositional") and (out / "samples.png").is_file()


def test_eval_seeds_do_not_depend_on_batching(tiny_pipe):
    from wordpaint.eval.compositional import evaluate_compositional
    from wordpaint.eval.prompts import load_prompts, subset

    prompts = subset(load_prompts(), 1)[:3]
    _, r1, im1 = evaluate_compositional(tiny_pipe, prompts, samples_per_prompt=2, seed=4, batch_size=2, show_progress=False)
    _, r2, im2 = evaluate_compositional(tiny_pipe, prompts, samples_per_prompt=2, seed=4, batch_size=6, show_progress=False)
    assert [r["seed"] for r in r1] == [4, 5, 6, 7, 8, 9] == [r["seed"] for r in r2]
    # same noise either way; matrix kernels may round differently at another batch size (seen
    # on an AVX2 CPU: one pixel one level apart), so allow one level
    assert all(np.abs(np.asarray(a, dtype=int) - np.asarray(b, dtype=int)).max() <= 1 for a, b in zip(im1, im2))
    # size= draws (and scores) at another side than the model's 32 px
    summary, r3, im3 = evaluate_compositional(tiny_pipe, prompts[:1], samples_per_prompt=1, seed=4, size=48, show_progress=False)
    assert im3[0].size == (48, 48) and len(r3) == 1 and summary["n_images"] == 1


def test_generate_with_planner_shows_plan_and_warns(capsys, tiny_dir, tmp_path):
    path = tmp_path / "p.png"
    code, out, err = run(capsys, "generate", "seven pink stars on a black background", "-o", str(path), "--model", str(tiny_dir),
                         "--planner", "rules", "--show-plan")
    assert code == 0
    plan = json.loads(out[out.index("{"): out.rindex("}") + 1])
    assert len(plan["objects"]) == 4 and plan["background"] == "black"
    assert "at most 4" in err and (tmp_path / "p-plan.png").is_file()
    meta = read_png_metadata(path)
    assert meta["planner"] == "rules" and meta["conditioning_prompt"] == "four pink stars on a black background"
    # a 5,000-character prompt is planned (first 300 characters), not an encoder error
    code, _, err = run(capsys, "generate", "a red circle " + "very " * 1000, "-o", str(tmp_path / "l.png"), "--model", str(tiny_dir),
                       "--planner", "rules")
    assert code == 0 and "only the first 300" in err


def test_show_plan_needs_a_planner_and_unknown_planner(capsys, tiny_dir, tmp_path):
    code, _, err = run(capsys, "generate", "a star", "-o", str(tmp_path / "x.png"), "--model", str(tiny_dir), "--show-plan")
    assert code == 2 and "--planner" in err
    code, _, err = run(capsys, "generate", "a star", "-o", str(tmp_path / "x.png"), "--model", str(tiny_dir), "--planner", "gpt9")
    assert code == 2 and "unknown planner" in err and "rules" in err
    code, _, err = run(capsys, "generate", "a star", "-o", str(tmp_path / "x.png"), "--model", str(tiny_dir),
                       "--planner", "rules", "--planner-dtype", "bfloat16")
    assert code == 2 and "--planner-dtype is an option of --planner smollm2" in err


def test_eval_report_shapes_suite(capsys, tiny_dir, tmp_path):
    code, out, _ = run(capsys, "eval", "report", "--model", str(tiny_dir), "--suite", "shapes", "--out", str(tmp_path / "rep"),
                       "--limit-per-task", "1", "--samples-per-prompt", "1", "--steps", "1", "--guidance-interval", "0.5,100000")
    assert code == 0 and "overall" in out
    res = json.loads((tmp_path / "rep" / "results.json").read_text())
    assert res["sampling"]["guidance_interval"] == [0.5, 100000.0]  # the option reaches the pipeline and the record
    assert set(res["summary"]["per_task"]) == {"single_object", "two_object", "counting", "colors", "position", "color_attr"}
    assert res["sampling"]["num_inference_steps"] == 1 and res["versions"]["diffusers"] != "not installed"
    assert (tmp_path / "rep" / "per_task.png").is_file() and (tmp_path / "rep" / "compositional" / "samples.png").is_file()
    assert len(json.loads((tmp_path / "rep" / "compositional" / "results.json").read_text())["records"]) == 6


def test_model_info(capsys, tiny_pipe, tiny_dir, tmp_path):
    code, out, _ = run(capsys, "model", "info", str(tiny_dir), "--json")
    info = json.loads(out)
    assert code == 0 and set(info["components"]) == {"diffusion"}
    assert info["components"]["diffusion"]["parameters"] == sum(p.numel() for p in tiny_pipe.model.parameters())
    assert info["resolution"] == tiny_pipe.resolution
    code, _, err = run(capsys, "model", "info", str(tmp_path / "nowhere"))
    assert code == 2 and "model folder not found" in err


def test_generate_with_regional_prompts_records_it(capsys, tmp_path):
    path = tmp_path / "r.png"
    code, _, err = run(capsys, "generate", "a green cross beside a red circle", "-o", str(path), "--regional-prompts", "--steps", "2")
    assert code == 0, err
    meta = read_png_metadata(path)
    assert meta["regional_prompts"] is True and len(meta["plan"]["objects"]) == 2


def test_generate_detail_and_img2img_record_it(capsys, tmp_path):
    path = tmp_path / "d.png"
    code, _, err = run(capsys, "generate", "a small green star beside a red circle", "-o", str(path), "--detail", "--steps", "2",
                       "--detail-strength", "0.5")
    assert code == 0, err
    meta = read_png_metadata(path)
    assert meta["detail"] is True and meta["detail_strength"] == 0.5
    again = tmp_path / "e.png"
    code, _, err = run(capsys, "generate", "a green star", "-o", str(again), "--init-image", str(path), "--strength", "0.5", "--steps", "4")
    assert code == 0, err
    meta = read_png_metadata(again)
    assert meta["init_image"] is True and meta["strength"] == 0.5 and meta["height"] == 48


@pytest.mark.parametrize("component, option, value, key", [("autoguide", "--autoguidance", "1.5", "autoguidance_scale"),
                                                          ("expert", "--expert-sigma", "0.5", "expert_sigma")])
def test_diffusion_component_is_added_from_a_run_folder_and_used_by_generate(capsys, tiny_dir, tmp_path, component, option, value, key):
    # without the component, its option is a one-line error
    code, _, err = run(capsys, "generate", "a star", "-o", str(tmp_path / "x.png"), "--model", str(tiny_dir), option, "1")
    assert code == 2 and f"needs a pipeline with an {component}" in err
    out = tmp_path / f"with_{component}"
    code, _, _ = run(capsys, "model", "replace", str(tiny_dir), "--component", component, "--from", str(tiny_dir), "--out", str(out))
    assert code == 0
    code, printed, _ = run(capsys, "model", "info", str(out), "--json")
    assert json.loads(printed)["components"][component]["family"] == "diffusion"
    png = tmp_path / "a.png"
    assert run(capsys, "generate", "a star", "-o", str(png), "--model", str(out), option, value, "--seed", "1")[0] == 0
    assert read_png_metadata(png)[key] == float(value)


def test_model_replace_stores_named_components_as_int8(capsys, tiny_dir, tmp_path):
    out = tmp_path / "int8"
    code, printed, err = run(capsys, "model", "replace", str(tiny_dir), "--component", "expert", "--from", str(tiny_dir),
                             "--out", str(out), "--dtype", "float16", "--int8", "diffusion,expert")
    assert code == 0 and "int8: diffusion, expert" in printed, err
    info = json.loads(run(capsys, "model", "info", str(out), "--json")[1])["components"]
    fp32 = json.loads(run(capsys, "model", "info", str(tiny_dir), "--json")[1])["components"]["diffusion"]["megabytes"]
    assert info["expert"]["megabytes"] < 0.45 * fp32 and info["diffusion"]["megabytes"] < 0.45 * fp32
    assert info["expert"]["int8"] and info["diffusion"]["int8"]
    assert not json.loads(run(capsys, "model", "info", str(tiny_dir), "--json")[1])["components"]["diffusion"]["int8"]
    assert "(int8 weights)" in run(capsys, "model", "info", str(out))[1]
    assert run(capsys, "generate", "a star", "-o", str(tmp_path / "a.png"), "--model", str(out), "--expert-sigma", "0.5")[0] == 0
    code, _, err = run(capsys, "model", "replace", str(tiny_dir), "--component", "diffusion", "--from", str(tiny_dir),
                       "--out", str(tmp_path / "bad"), "--int8", "unet")
    assert code == 2 and "unknown int8 component 'unet'" in err and not (tmp_path / "bad").exists()


def test_expert_sigma_and_refine_strength_off_bad_and_recorded_by_the_report(capsys, tiny_dir, tmp_path):
    out = tmp_path / "with_expert"
    assert run(capsys, "model", "replace", str(tiny_dir), "--component", "expert", "--from", str(tiny_dir), "--out", str(out))[0] == 0
    png = tmp_path / "a.png"
    assert run(capsys, "generate", "a star", "-o", str(png), "--model", str(out), "--expert-sigma", "off", "--seed", "1")[0] == 0
    assert "expert_sigma" not in read_png_metadata(png)
    code, _, err = run(capsys, "generate", "a star", "-o", str(png), "--model", str(out), "--expert-sigma", "low")
    assert code == 2 and "--expert-sigma must be a noise level >= 0 or off, got 'low'" in err
    code, _, err = run(capsys, "eval", "report", "--model", str(out), "--suite", "shapes", "--out", str(tmp_path / "rep"),
                       "--limit-per-task", "1", "--samples-per-prompt", "1", "--steps", "2", "--expert-sigma", "0.5",
                       "--refine-strength", "0.5")
    assert code == 0, err
    sampling = json.loads((tmp_path / "rep" / "results.json").read_text())["sampling"]
    assert sampling["expert_sigma"] == 0.5 and sampling["refine_strength"] == 0.5 and sampling["refined_by"] == "expert"
    assert run(capsys, "generate", "a star", "-o", str(png), "--model", str(out), "--refine-strength", "0.5", "--seed", "1")[0] == 0
    assert read_png_metadata(png)["refine_strength"] == 0.5
