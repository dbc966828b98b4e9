"""One module per tab: each lays out its components and wires its own events (`build(shared) -> Tab`)."""
