"""The catalogue: many (task, model) run folders side by side, and the analyses across them."""
