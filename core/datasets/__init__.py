"""Image–caption datasets: immutable, content-addressed versions and the ways in and out of them."""
