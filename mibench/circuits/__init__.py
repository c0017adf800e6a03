"""The circuit-localization track: batches, attribution math, circuit selection, faithfulness, CPR/CMD."""
