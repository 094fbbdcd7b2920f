"""ZegFormer Studio: zero-shot semantic segmentation in a Gradio Space.

Layout and event wiring only. The model is loaded once at start-up (`zegformer.faces.startup`);
the callbacks below pass the user's input to the predictor (`zegformer.faces.modes.run_modes`),
and `zegformer.faces.tables` turns the results into what the page shows.

    python app.py                   # weights from $ZEGFORMER_WEIGHTS / $ZEGFORMER_CLIP_WEIGHTS
    python app.py --random-weights  # the tiny untrained model: the whole UI, meaningless output
"""
from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import os
from pathlib import Path
from typing import Any, Callable

# No telemetry: Gradio's analytics (api.gradio.app at start-up) and the Hub's are off before
# either library is imported (`spaces` imports Gradio).
os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")

try:  # Hugging Face Spaces: `spaces` must be imported before torch initialises CUDA
    import spaces
except ImportError:  # everywhere else the app runs without it
    spaces = None
ZERO_GPU = spaces is not None and bool(os.environ.get("SPACES_ZERO_GPU"))

import gradio as gr
import PIL.Image
from gradio.route_utils import MultiPartException
from gradio.utils import get_upload_folder
from starlette.middleware import Middleware

from zegformer.errors import ZegFormerError
from zegformer.faces import live, no_model, page, serving, startup, tables
from zegformer.faces.guarded_blocks import GuardedBlocks, user_text
from zegformer.faces.modes import MODE_CHOICES, expand_modes
from zegformer.faces.serving import Infer, chosen, remembered
from zegformer.faces.web_guard import DEFAULT_FRAME_ANCESTORS, GuardMiddleware, OutputStore
from zegformer.inference.image import MAX_IMAGE_PIXELS
from zegformer.text import MAX_CLASSES, MAX_NAME_LENGTH, MAX_VOCABULARY_TEXT

CONCURRENCY_LIMIT = 1  # requests running the model at once (one model on one GPU)
MAX_QUEUE = 32  # requests waiting beyond that; more are told the queue is full
MAX_UPLOAD = 25_000_000  # bytes: largest file accepted by the server
MAX_UPLOAD_FILES = 2  # files in one upload request (the page sends one image at a time)
MAX_REQUEST_BYTES = MAX_UPLOAD + 1_000_000  # one upload request, all files and form overhead
MAX_BODY_BYTES = 8_000_000  # any other request body (the API's JSON)
GPU_SECONDS = 120  # ZeroGPU time requested per call
# Settings a Space owner may change (Variables in the Space's settings):
MAX_WAIT_ENV = "ZEGFORMER_MAX_WAIT_S"  # a queued request that waited longer is not run
MAX_WAIT_S = 120.0
OUTPUT_AGE_ENV = "ZEGFORMER_OUTPUT_MAX_AGE_S"  # outputs and uploads are deleted after this
OUTPUT_MAX_AGE_S = 600.0
FRAME_ANCESTORS_ENV = "ZEGFORMER_FRAME_ANCESTORS"  # who may show the app in a frame (CSP)
UNTRAINED_CSS = """
#untrained { background: #b91c1c; border-radius: 6px; padding: 4px 12px; }
#untrained, #untrained * { color: #ffffff !important; }
#untrained code { background: rgba(255, 255, 255, 0.2) !important; }
"""
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

    is_template = True  # drawn as a plain Image, and named "Image" in the API page

    def preprocess(self, payload: Any) -> Any:
        try:
            return super().preprocess(payload)
        except gr.Error:
            raise
        except PIL.Image.DecompressionBombError:  # Gradio's own open() read the header
            raise gr.Error(
                f"The image is too large (over {2 * PIL.Image.MAX_IMAGE_PIXELS / 1e6:.0f} MP); "
                f"at most {MAX_IMAGE_PIXELS / 1e6:g} MP are accepted (downscale it first).",
                print_exception=False) from None
        except Exception as e:  # PIL: not an image, truncated file
            raise gr.Error(
                f"The upload is not an image this app can read ({type(e).__name__}). "
                "Use a JPEG, PNG, WebP, BMP or TIFF file.", print_exception=False) from None


class ClassesInput(gr.Textbox):
    """The class box: the API takes the classes as one string (GuardedBlocks refuses a list,
    which Gradio would otherwise turn into the text "['cat', 'dog']")."""

    payload_hint = "one comma-separated string, e.g. 'cat, dog, tv | television'"

    is_template = True  # drawn as a plain Textbox, and named "Textbox" in the API page


def _seconds(env: str, default: float) -> float:
    """A positive number of seconds from the environment variable `env`, else `default`."""
    raw = os.environ.get(env, "").strip()
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        value = float("nan")
    if not value > 0:
        raise SystemExit(f"{env} must be a positive number of seconds, got {raw!r}")
    return value


def output_store() -> OutputStore:
    """Where one request's downloads go: a fresh folder inside Gradio's cache (so Gradio serves
    them without a second copy), deleted after $ZEGFORMER_OUTPUT_MAX_AGE_S seconds."""
    return OutputStore(Path(get_upload_folder()) / "zegformer-outputs",
                       _seconds(OUTPUT_AGE_ENV, OUTPUT_MAX_AGE_S))


def on_gpu(fn):
    """`spaces.GPU` where the `spaces` package is installed (it only acts on ZeroGPU hardware),
    the function itself elsewhere."""
    return spaces.GPU(duration=GPU_SECONDS)(fn) if spaces is not None else fn


def serve(predictor: Any) -> Infer:
    """`serving.serve` on ZeroGPU's `spaces.GPU` where that is installed."""
    return serving.serve(predictor, wrap=on_gpu)


def bind(fn: Callable, *args: Any) -> functools.partial:
    """`fn` with its first arguments fixed, keeping its name and docstring (the API page shows
    the docstring; the bound arguments are not API parameters)."""
    bound = functools.partial(fn, *args)
    bound.__name__, bound.__doc__ = fn.__name__, fn.__doc__  # type: ignore[attr-defined]
    return bound


def example_rows() -> list[list[Any]]:
    """gr.Examples rows from examples/examples.json: image and classes only (a click keeps the
    visitor's mode, threshold and opacity)."""
    return [[str(path), classes] for path, classes in startup.example_entries()]


# ----------------------------------------------------------------------------- callbacks
# `model` is the loaded predictor or the Markdown saying why there is none; `infer` is
# `serve(model)` (None without a model). `build_demo` binds both.
def _request(model: Any, infer: Infer | None, image, classes, mode, threshold, opacity,
             progress, tta: bool = False, query: str = "",
             fast: bool = False) -> tuple[tables.Response, live.Kept]:
    if isinstance(model, str) or infer is None:
        raise gr.Error(user_text(startup.no_model_error(model)), title="No model loaded",
                       print_exception=False)
    try:
        if not image:
            raise ZegFormerError("Upload an image first.")
        modes = expand_modes(mode)
        progress(0.0, desc="starting")
        # On ZeroGPU the model runs in a worker process, where gr.Progress cannot follow.
        report = None if ZERO_GPU else (lambda f, d: progress(f, desc=d))
        options = chosen(tta=tta, fast=fast)  # the page's checkboxes
        rgb, results = infer(image, classes, modes, threshold, report, **options)
        response = tables.respond(rgb, results, opacity, output_store().new_dir(),
                                  threshold=float(threshold), query=query or "")
        return response, live.keep(response, rgb, results, threshold, opacity)
    except (ZegFormerError, ValueError) as e:
        raise gr.Error(user_text(str(e)), print_exception=False) from None


def segment(model, infer, image, classes, mode, threshold, opacity, progress=gr.Progress()):
    """Segment `image` into the comma-separated `classes` ("a | b" joins synonyms) with
    mode "decoupled", "pixel" or "both"; pixels whose best normalised score is below
    `threshold` stay unlabelled; `opacity` (0..1) sets the overlays' strength.

    Returns: the found classes' confidences (mean normalised score over each class's pixels,
    first mode), the class table (every class and mode), the disagreement map ("both" only),
    the downloads (label maps, overlays, figures, classes.csv, result.json), the JSON result,
    the status line and the parsed class list."""
    response, _ = _request(model, infer, image, classes, mode, threshold, opacity, progress)
    return response.api_values()


def segment_and_show(model, infer, image, classes, mode, threshold, opacity, tta=False,
                     query="", fast=False, progress=gr.Progress()):
    """`segment` for the page: the confidence panel, the top classes of the table (filtered by
    `query`), the overlays (the second one and the disagreement map with a "both" result only)
    and the result kept for the live controls; `tta` and `fast` are the page's checkboxes
    (test-time augmentation; the fast approximation, which results and status mark)."""
    response, kept = _request(model, infer, image, classes, mode, threshold, opacity, progress,
                              bool(tta), query, bool(fast))
    return page.page_values(response, kept)


def _preset(current: str, label: str | None, extend: bool) -> str:
    if not label:
        raise gr.Error("Choose a preset vocabulary first.", print_exception=False)
    try:
        return startup.fill_classes(current, label, extend)
    except ZegFormerError as e:
        raise gr.Error(user_text(str(e)), print_exception=False) from None


def replace_classes(current: str, label: str | None) -> str:
    """The class box replaced by the chosen preset vocabulary."""
    return _preset(current, label, extend=False)


def add_classes(current: str, label: str | None) -> str:
    """The class box extended with the preset's classes it does not hold yet."""
    return _preset(current, label, extend=True)


# ----------------------------------------------------------------------------- layout
def build_demo(model: Any) -> gr.Blocks:
    """The whole UI around one loaded predictor, or around a Markdown message saying why none is.

    Args:
        model: a `zegformer.Predictor`, or a `str` explaining what to configure.
    """
    predictor = None if isinstance(model, str) else model
    infer = serve(predictor) if predictor is not None else None
    rows = example_rows()
    age = round(_seconds(OUTPUT_AGE_ENV, OUTPUT_MAX_AGE_S))
    with GuardedBlocks(title="ZegFormer Studio", analytics_enabled=False,
                       delete_cache=(max(1, min(60, age // 2)), max(1, age)),
                       max_wait_s=_seconds(MAX_WAIT_ENV, MAX_WAIT_S)) as demo:
        gr.Markdown(INTRO)
        if predictor is None:
            gr.Markdown(str(model), elem_id="setup-help")
        elif predictor.untrained:  # red (UNTRAINED_CSS); the status line repeats it briefly
            gr.Markdown("⚠️ **Untrained weights:** this instance runs a tiny random model "
                        "(`--random-weights`); its output is meaningless.", elem_id="untrained")
        with gr.Row():
            with gr.Column(scale=2):
                # image_mode=None: the upload reaches the library as sent; its reader checks the
                # header's pixel count before decoding and documents its conversions.
                image = ImageInput(type="filepath", image_mode=None, label="Image",
                                   elem_id="input-image",
                                   sources=["upload", "webcam", "clipboard"])
                classes = ClassesInput(
                    value=DEFAULT_CLASSES, lines=3, label="Classes", elem_id="classes",
                    max_length=MAX_VOCABULARY_TEXT,
                    info=f"Commas separate classes; `a | b` = synonyms of one class. At most "
                         f"{MAX_CLASSES} classes of {MAX_NAME_LENGTH} characters.")
                parsed = gr.Markdown(startup.describe_classes(DEFAULT_CLASSES),
                                     label="Parsed classes", elem_id="parsed-classes")
                with gr.Row(equal_height=True):
                    preset = gr.Dropdown(startup.available_presets(), value=None, scale=3,
                                         label="Preset vocabulary", elem_id="preset")
                    with gr.Column(scale=1, min_width=120):
                        replace_btn = gr.Button("Replace classes", size="sm",
                                                elem_id="preset-replace")
                        extend_btn = gr.Button("Add to classes", size="sm", elem_id="preset-add")
                mode = gr.Radio(MODE_CHOICES, value="decoupled", label="Scoring", elem_id="mode")
                threshold = gr.Slider(0.0, 1.0, value=0.0, step=0.01, elem_id="threshold",
                                      label="Threshold (pixels less confident stay unlabelled)")
                opacity = gr.Slider(0.0, 1.0, value=0.5, step=0.05, label="Overlay opacity",
                                    elem_id="opacity")
                tta_box = gr.Checkbox(False, elem_id="tta",
                                      label="Test-time augmentation (the official 12 passes: "
                                            "sizes x flip, averaged; about 12x slower)")
                fast_box = gr.Checkbox(False, elem_id="fast",
                                       label="Fast approximation (decoupled: CLIP on the main "
                                             "segments only; not the official numbers)")
                run_btn = gr.Button("Segment", variant="primary", elem_id="run")
            with gr.Column(scale=3):
                status = gr.Markdown(label="Status", elem_id="status")
                # the overlays' legends give each class's area; the pixel-level overlay and the
                # disagreement map appear with a "both" result (`page.page_values`)
                with gr.Row():
                    overlay = gr.AnnotatedImage(label="Overlay", elem_id="overlay")
                    overlay2 = gr.AnnotatedImage(label="Pixel-level", elem_id="overlay-pixel",
                                                 visible=False)
                disagreement = gr.Image(label="Where the two modes disagree", type="pil",
                                        show_label=False, interactive=False, visible=False,
                                        height=320, elem_id="disagreement")
                panel = gr.Markdown(elem_id="confidences")  # `views.confidence_panel`
                # the API's confidences (found classes, first mode); the page shows the panel
                confidences = gr.Label(label="Per-class confidence (mean score over its pixels)",
                                       visible=False, elem_id="api-confidences")
                table_filter = gr.Textbox(label="Find a class", elem_id="class-filter",
                                          max_length=200, lines=1,
                                          placeholder="part of a class name or synonym")
                table = gr.Dataframe(headers=tables.TABLE_HEADERS, label="Classes",
                                     interactive=False, wrap=True, elem_id="class-table")
                files = gr.File(label="Downloads (label map, overlay, figure, CSV, JSON)",
                                file_count="multiple", interactive=False, elem_id="downloads")
                with gr.Accordion("Result as JSON", open=False):
                    result_json = gr.JSON(label="Result", elem_id="result-json")
                kept = gr.State(None, time_to_live=age)  # the last result, for the live controls

        inputs = [image, classes, mode, threshold, opacity]
        outputs = [confidences, table, disagreement, files, result_json, status, parsed]
        shown = [panel, table, disagreement, files, result_json, status, parsed, overlay,
                 overlay2, kept]  # the page's outputs (`page.page_values`)
        on_model = dict(concurrency_limit=CONCURRENCY_LIMIT, concurrency_id="model")
        private = dict(api_visibility="private", queue=False)
        # /segment: the button's work without the overlays, an endpoint with no trigger on the page
        gr.on([], bind(segment, model, infer), inputs, outputs, api_name="segment", **on_model)
        # live controls: redrawn from the kept result, queued (they draw images), never the model
        redraw = dict(api_visibility="private", concurrency_limit=1, concurrency_id="redraw")
        new_dir = lambda: output_store().new_dir()  # noqa: E731
        live_inputs = [kept, threshold, opacity, table_filter]
        run_btn.click(bind(segment_and_show, model, infer), inputs + [tta_box, table_filter, fast_box],
                      shown, api_visibility="private", **on_model
                      ).then(bind(page.catch_up, new_dir), live_inputs, shown, **redraw)
        for slider in (threshold, opacity):
            slider.release(bind(page.redraw_and_show, new_dir), live_inputs, shown,
                           trigger_mode="always_last", **redraw)
        table_filter.change(page.filter_table, [kept, table_filter], table, **private)
        classes.change(startup.describe_classes, classes, parsed, **private)
        # queued (each its own slot, not the model's): a mistake is one toast, not an Error pill
        replace_btn.click(replace_classes, [classes, preset], classes, api_visibility="private")
        extend_btn.click(add_classes, [classes, preset], classes, api_visibility="private")

        if rows and infer is not None:  # examples fill the image and the classes only
            examples = gr.Examples(rows, [image, classes], label="Examples (click one to run it)",
                                   api_visibility="private", elem_id="examples")
            examples.load_input_event.then(
                bind(segment_and_show, model, remembered(infer, len(rows))),
                inputs + [tta_box, table_filter, fast_box], shown, api_visibility="private",
                **on_model).then(bind(page.catch_up, new_dir), live_inputs, shown, **redraw)
        elif rows:  # no model: shown, not clickable
            no_model.disabled_examples(rows, inputs)
        if predictor is None:  # nothing on the page can start a request that must fail
            no_model.disable_controls(demo)
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
    predictor = startup.load_app_predictor(random_weights=args.random_weights or None)
    # Preset text embeddings, in the background (a str is the setup message: no model). Not on
    # ZeroGPU: requests run in forked GPU workers, which must not inherit a lock held by it.
    if not isinstance(predictor, str) and not ZERO_GPU:
        startup.warm_presets(predictor)
    demo = build_demo(predictor)
    launch(demo, server_name=args.host, server_port=args.port, share=args.share)


def _sweeper(store: OutputStore) -> Callable:
    """A lifespan for the server: sweeps the output folders while it runs."""

    @contextlib.asynccontextmanager
    async def lifespan(_app: Any):
        async def sweep_forever() -> None:
            while True:
                await asyncio.sleep(max(0.5, min(60.0, store.max_age_s / 2)))
                await asyncio.to_thread(store.sweep)

        task = asyncio.create_task(sweep_forever())
        try:
            yield
        finally:
            task.cancel()

    return lifespan


def launch(demo: gr.Blocks, **kwargs: Any) -> Any:
    """`demo.launch` with this app's limits: upload and body caps, no fetch routes, security
    headers and the arrival stamp the wait limit reads (`GuardMiddleware`), the output sweep,
    no verbose errors, no server-side rendering (its Node server would bypass the guard).
    `kwargs` are launch's own (server_name, server_port, prevent_thread_lock, ...)."""
    guard = Middleware(
        GuardMiddleware, max_upload_files=MAX_UPLOAD_FILES, max_upload_bytes=MAX_REQUEST_BYTES,
        max_body_bytes=MAX_BODY_BYTES,
        frame_ancestors=os.environ.get(FRAME_ANCESTORS_ENV) or DEFAULT_FRAME_ANCESTORS,
        # Gradio's own multipart error: Gradio deletes the partial files and answers 413
        upload_error=lambda status, message: MultiPartException(message))
    kwargs.setdefault("show_error", False)
    kwargs.setdefault("css", no_model.CSS + UNTRAINED_CSS)
    return demo.launch(max_file_size=MAX_UPLOAD, ssr_mode=False, enable_monitoring=False,
                       app_kwargs={"middleware": [guard],
                                   "lifespan": _sweeper(output_store())}, **kwargs)


if __name__ == "__main__":
    main()
