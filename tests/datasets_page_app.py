"""A one-page app for AppTest: the Datasets page on its own."""

import core  # noqa: F401

from pages import datasets

datasets.render()
