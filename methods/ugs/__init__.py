"""Built-in circuit method (see method.yaml)."""
