"""Pieces of the Gradio app (app.py): flag queue, batch checks, charts and HTML views. No model code here."""
