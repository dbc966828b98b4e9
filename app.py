"""Entry point, locally (`make run`) and on Hugging Face Spaces: `demo` is importable without launching."""

import os

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

from app import service  # noqa: E402
from app.ui import I18N, PAGE_CSS, PAGE_JS, build_demo  # noqa: E402

service.start_up()  # on ZeroGPU: the default model, loaded before any GPU worker is forked
demo = build_demo()

if __name__ == "__main__":
    demo.queue(default_concurrency_limit=2).launch(
        server_name=os.environ.get("GRADIO_SERVER_NAME", "127.0.0.1"),
        server_port=int(os.environ.get("GRADIO_SERVER_PORT", "7860")),
        max_file_size="50mb",
        i18n=I18N,
        js=PAGE_JS,
        css=PAGE_CSS,
        footer_links=["api", "gradio"],  # the page has its own language toggle (Gradio's Settings lists 33)
    )
