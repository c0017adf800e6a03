"""Built-in causal-track featurizer methods (see the YAML cards in this folder)."""
