"""One module per Streamlit page, each with a `render()` function; thin: read state, call, render."""
