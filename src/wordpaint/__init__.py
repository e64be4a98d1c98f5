"""wordpaint: text-to-image generation driven by a pretrained language model, offline on CPU."""

__version__ = "0.1.0"

from wordpaint.errors import ModelLoadError, WordpaintError  # noqa: E402


def __getattr__(name: str):
    # Lazy: importing torch/diffusers costs seconds, and `wordpaint --help` should not pay it.
    if name in ("TextToImagePipeline", "TextToImageOutput"):
        from wordpaint.pipelines import text_to_image

        return getattr(text_to_image, name)
    raise AttributeError(name)


__all__ = ["TextToImagePipeline", "TextToImageOutput", "WordpaintError", "ModelLoadError", "__version__"]
