"""Pure geometry and sequence rules: plain values in, plain values out, no I/O."""
