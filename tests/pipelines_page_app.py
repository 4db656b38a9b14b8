"""The Pipelines page alone, for AppTest (the entry file's navigation would show Home first)."""

import core  # noqa: F401

from pages import pipelines

pipelines.render()
