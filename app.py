"""ZegFormer Studio: zero-shot semantic segmentation in a Gradio Space.

User interface only. The model is loaded once at start-up (`zegformer.faces.app_support`), each request
runs the read-only predictor, and `zegformer.viz.drawing` draws the results.

    python app.py                   # weights from $ZEGFORMER_WEIGHTS / $ZEGFORMER_CLIP_WEIGHTS
    python app.py --random-weights  # the tiny untrained model: the whole UI, meaningless output
"""
from __future__ import annotations

import argparse
import json
import os
import threading
from pathlib import Path
from typing import Any

try:  # Hugging Face Spaces: `spaces` must be imported before torch initialises CUDA
    import spaces
except ImportError:  # everywhere else the app runs without it
    spaces = None
ZERO_GPU = spaces is not None and bool(os.environ.get("SPACES_ZERO_GPU"))

import gradio as gr

from zegformer.faces import app_support as support
from zegformer.errors import ZegFormerError
from zegformer.inference.image import limit_size, load_image
from zegformer.text import MAX_CLASSES, MAX_NAME_LENGTH, parse_classes

ROOT = Path(__file__).resolve().parent
EXAMPLES_DIR = ROOT / "examples"
CONCURRENCY_LIMIT = 1  # requests running the model at once (one model on one GPU)
MAX_QUEUE = 32  # requests waiting beyond that; more are told the queue is full
MAX_UPLOAD = "25MB"  # largest upload accepted by the server
GPU_SECONDS = 120  # ZeroGPU time requested per call
DEFAULT_CLASSES = "person, dog, cat, grass, sky, tree, building, road, car"
INTRO = (
    "# ZegFormer Studio\n"
    "Zero-shot semantic segmentation with ZegFormer (Ding et al., *Decoupling Zero-Shot Semantic "
    "Segmentation*, CVPR 2022). Upload an image, name the classes you are looking for (commas "
    "separate classes, `tv | television` joins synonyms into one class), and compare ZegFormer's "
    "decoupled, segment-level scoring with plain pixel-level scoring."
)


class ImageInput(gr.Image):
    """`gr.Image` that answers an upload it cannot decode with a clear message.

    The stock component fails with a processing error that the client sees as an opaque
    exception; here the same case becomes a `gr.Error` the user can act on.
    """

    def get_block_name(self) -> str:
        return "image"  # the frontend draws it as a plain Image

    def preprocess(self, payload: Any) -> Any:
        try:
            return super().preprocess(payload)
        except gr.Error:
            raise
        except Exception as e:  # PIL: not an image, truncated file, decompression bomb
            raise gr.Error(
                f"The upload is not an image this app can read ({type(e).__name__}). "
                "Use a JPEG, PNG, WebP, BMP or TIFF file.", print_exception=False) from None


def on_gpu(fn):
    """`spaces.GPU` where the `spaces` package is installed (it only acts on ZeroGPU hardware),
    the function itself elsewhere."""
    return spaces.GPU(duration=GPU_SECONDS)(fn) if spaces is not None else fn


def load_examples() -> list[list[Any]]:
    """gr.Examples rows from examples/examples.json: image, classes, mode, threshold, opacity."""
    manifest = EXAMPLES_DIR / "examples.json"
    if not manifest.is_file():
        return []
    with open(manifest, encoding="utf-8") as f:
        entries = json.load(f)
    return [[str(EXAMPLES_DIR / e["image"]), e["classes"], "decoupled", 0.0, 0.5]
            for e in entries if (EXAMPLES_DIR / e["image"]).is_file()]


def _fraction(value: Any, name: str) -> float:
    """A slider value checked before any model work: a number in 0..1."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        number = float("nan")
    if not 0.0 <= number <= 1.0:
        raise ZegFormerError(f"{name} must be a number between 0 and 1, got {value!r}")
    return number


def build_demo(model: Any) -> gr.Blocks:
    """The whole UI around one loaded predictor, or around a Markdown message saying why none is.

    Args:
        model: a `zegformer.Predictor`, or a `str` explaining what to configure.
    """
    predictor = None if isinstance(model, str) else model
    model_lock = threading.Lock()  # one prediction at a time, from any event (button, examples)

    @on_gpu
    def infer(image, names, modes, threshold, progress=None):
        return support.run_modes(predictor, image, names, modes, threshold, progress)

    def segment(image, classes, mode, threshold, opacity, progress=gr.Progress()):
        """Segment `image` into the comma-separated `classes` ("a | b" joins synonyms) with
        mode "decoupled", "pixel" or "both"; pixels whose best normalised score is below
        `threshold` stay unlabelled; `opacity` (0..1) sets the overlays' strength.

        Returns: per-class confidences, the class table, the disagreement map ("both" only),
        the downloads (label maps, overlays, figures, result.json), the JSON result, the status
        line and the parsed class list."""
        if predictor is None:
            plain = str(model).replace("**", "").replace("`", "")
            raise gr.Error(plain, title="No model loaded", print_exception=False)
        try:
            if not image:
                raise ZegFormerError("Upload an image first.")
            names = parse_classes(classes or "")
            modes = support.modes_for(mode, predictor.modes)
            threshold, opacity = _fraction(threshold, "threshold"), _fraction(opacity, "opacity")
            rgb = load_image(image)
            original = rgb.shape[:2]
            rgb = limit_size(rgb, predictor.max_side)
            progress(0.0, desc="starting")
            # On ZeroGPU the model runs in a worker process, where gr.Progress cannot follow.
            report = None if ZERO_GPU else (lambda f, d: progress(f, desc=d))
            with model_lock:
                results = infer(rgb, names, modes, threshold, report)
            out = support.package(rgb, results, opacity, support.new_output_dir(), original)
        except (ZegFormerError, ValueError) as e:
            raise gr.Error(str(e), print_exception=False) from None
        return (out.confidences, out.table, out.disagreement, out.files, out.data, out.status,
                support.describe_classes(classes))

    def show_overlays(image, files, data):
        """The overlays (value, colours, title) of the last result, rebuilt from its outputs."""
        values = []
        if predictor is not None and image and files and data:
            try:
                rgb = limit_size(load_image(image), predictor.max_side)
                values = support.overlay_values(rgb, data, files)
            except (ZegFormerError, ValueError, OSError, KeyError):
                values = []  # stale or foreign outputs: leave the overlays empty
        updates = [gr.update(value=v, label=title, color_map=cmap) for v, title, cmap in values]
        return (updates + [None, None])[:2]

    def run_example(image, classes, mode, threshold, opacity, progress=gr.Progress()):
        """`segment` for the example rows (single-mode, so without the disagreement map, whose
        empty value Gradio's example cache cannot read back)."""
        out = segment(image, classes, mode, threshold, opacity, progress=progress)
        return out[:2] + out[3:]

    with gr.Blocks(title="ZegFormer Studio", delete_cache=(3600, 3600)) as demo:
        gr.Markdown(INTRO)
        if predictor is None:
            gr.Markdown(str(model), elem_id="setup-help")
        elif predictor.untrained:
            gr.Markdown("⚠️ **Untrained weights:** this instance runs a tiny random model "
                        "(`--random-weights`); its output is meaningless.", elem_id="untrained")
        with gr.Row():
            with gr.Column(scale=2):
                image = ImageInput(type="filepath", label="Image", elem_id="input-image",
                                   sources=["upload", "clipboard"])
                classes = gr.Textbox(
                    value=DEFAULT_CLASSES, lines=3, label="Classes", elem_id="classes",
                    info=f"Commas separate classes; `a | b` = synonyms of one class. At most "
                         f"{MAX_CLASSES} classes of {MAX_NAME_LENGTH} characters.")
                parsed = gr.Markdown(support.describe_classes(DEFAULT_CLASSES),
                                     elem_id="parsed-classes")
                with gr.Row(equal_height=True):
                    preset = gr.Dropdown(support.available_presets(), value=None, scale=3,
                                         label="Preset vocabulary", elem_id="preset")
                    with gr.Column(scale=1, min_width=120):
                        replace_btn = gr.Button("Replace classes", size="sm",
                                                elem_id="preset-replace")
                        extend_btn = gr.Button("Add to classes", size="sm", elem_id="preset-add")
                mode = gr.Radio(support.MODE_CHOICES, value="decoupled", label="Scoring",
                                elem_id="mode")
                threshold = gr.Slider(0.0, 1.0, value=0.0, step=0.01, elem_id="threshold",
                                      label="Threshold (pixels less confident stay unlabelled)")
                opacity = gr.Slider(0.0, 1.0, value=0.5, step=0.05, label="Overlay opacity",
                                    elem_id="opacity")
                run_btn = gr.Button("Segment", variant="primary", elem_id="run")
            with gr.Column(scale=3):
                status = gr.Markdown(elem_id="status")
                with gr.Row():
                    overlay = gr.AnnotatedImage(label="Overlay", elem_id="overlay")
                    overlay2 = gr.AnnotatedImage(label="Pixel-level", elem_id="overlay-pixel",
                                                 visible=False)
                disagreement = gr.Image(label="Where the two modes disagree", type="pil",
                                        show_label=False, interactive=False, visible=False,
                                        height=320,
                                        elem_id="disagreement")
                confidences = gr.Label(label="Per-class confidence", num_top_classes=10,
                                       elem_id="confidences")
                table = gr.Dataframe(headers=support.TABLE_HEADERS, label="Classes",
                                     interactive=False, elem_id="class-table")
                files = gr.File(label="Downloads (label map, overlay, figure, JSON)",
                                file_count="multiple", interactive=False, elem_id="downloads")
                with gr.Accordion("Result as JSON", open=False):
                    result_json = gr.JSON(label="Result", elem_id="result-json")

        inputs = [image, classes, mode, threshold, opacity]
        outputs = [confidences, table, disagreement, files, result_json, status, parsed]
        run_btn.click(segment, inputs, outputs, api_name="segment",
                      concurrency_limit=CONCURRENCY_LIMIT, concurrency_id="model")
        # The overlays follow every new result, from the button or a (cached) example.
        private = dict(api_visibility="private", queue=False)
        result_json.change(show_overlays, [image, files, result_json], [overlay, overlay2],
                           **private)
        classes.change(support.describe_classes, classes, parsed, **private)
        mode.change(lambda m: [gr.update(visible=m == "both")] * 2, mode,
                    [overlay2, disagreement], **private)

        def use_preset(current, label, extend):
            if not label:
                raise gr.Error("Choose a preset vocabulary first.", print_exception=False)
            try:
                return support.fill_classes(current, label, extend)
            except ZegFormerError as e:
                raise gr.Error(str(e), print_exception=False) from None

        replace_btn.click(lambda c, p: use_preset(c, p, False), [classes, preset], classes,
                          **private)
        extend_btn.click(lambda c, p: use_preset(c, p, True), [classes, preset], classes,
                         **private)

        rows = load_examples()
        if rows and predictor is not None:
            gr.Examples(rows, inputs, outputs[:2] + outputs[3:], fn=run_example,
                        cache_examples=True, cache_mode="lazy", api_visibility="private",
                        label="Examples (click one to run it)", visible_columns=[0, 1],
                        elem_id="examples")
        elif rows:
            gr.Examples(rows, inputs, label="Examples", visible_columns=[0, 1])
    demo.queue(max_size=MAX_QUEUE, default_concurrency_limit=CONCURRENCY_LIMIT)
    return demo


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="ZegFormer Studio (Gradio app)")
    parser.add_argument("--random-weights", action="store_true",
                        help="serve the tiny untrained model (no weights needed)")
    parser.add_argument("--host", default=os.environ.get("GRADIO_SERVER_NAME", "127.0.0.1"))
    parser.add_argument("--port", type=int, default=int(os.environ.get("GRADIO_SERVER_PORT", 7860)))
    parser.add_argument("--share", action="store_true", help="create a public gradio.live link")
    args = parser.parse_args(argv)
    demo = build_demo(support.load_app_predictor(random_weights=args.random_weights or None))
    demo.launch(server_name=args.host, server_port=args.port, share=args.share,
                max_file_size=MAX_UPLOAD, show_error=False)


if __name__ == "__main__":
    main()
