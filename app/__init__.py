"""The Gradio explorer: rendering (`app.render`, no gradio) and wiring (`app.ui`)."""
