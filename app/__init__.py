"""The UI shell: the Streamlit entry, shared widgets, the Gradio playground and the HTTP API."""
