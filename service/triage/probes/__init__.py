"""One module per probe; ``registry.py`` lists them."""
