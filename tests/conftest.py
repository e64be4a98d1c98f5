import os

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"

import pytest
import torch

torch.set_num_threads(int(os.environ.get("WORDPAINT_TEST_THREADS", "2")))


@pytest.fixture(scope="session", autouse=True)
def wordpaint_cache(tmp_path_factory):
    """A cache folder of the test session's own (not the user's ~/.cache/wordpaint), removed at
    the end: the smollm2 planner keeps its 520 MB converted copy there."""
    import shutil

    path = tmp_path_factory.mktemp("wordpaint_cache")
    old = os.environ.get("WORDPAINT_CACHE")
    os.environ["WORDPAINT_CACHE"] = str(path)
    yield path
    if old is None:
        os.environ.pop("WORDPAINT_CACHE", None)
    else:
        os.environ["WORDPAINT_CACHE"] = old
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="session")
def text_encoder():
    from wordpaint.text.encoder import TextEncoder

    return TextEncoder()


@pytest.fixture(scope="session")
def tiny_pipe(text_encoder):
    """A tiny untrained pipeline (channels (4, 8), 32 px)."""
    from wordpaint.models.registry import build_config, build_model
    from wordpaint.pipelines.text_to_image import TextToImagePipeline

    torch.manual_seed(0)
    return TextToImagePipeline(text_encoder=text_encoder, model=build_model(build_config(preset="tiny")),
                               defaults={"num_inference_steps": 2})


@pytest.fixture(scope="session")
def tiny_dir(tiny_pipe, tmp_path_factory):
    path = tmp_path_factory.mktemp("models") / "tiny"
    tiny_pipe.save_pretrained(path)
    return path


@pytest.fixture(scope="session")
def latent_runs(tmp_path_factory):
    """(image folder, tiny autoencoder, tiny latent pipeline) trained once for the session's
    latent-model tests (tests/test_latent.py, tests/test_noised_clip.py)."""
    from test_latent import _folder
    from wordpaint.training.train import train

    root = tmp_path_factory.mktemp("latent")
    folder = _folder(root / "folder")
    ae = train("tiny_ae", root / "ae", data=folder, show_progress=False)
    ld = train("tiny_latent", root / "ld", data=folder, autoencoder=ae, show_progress=False)
    return folder, ae, ld
