"""The lists a nightly run hands on, one module each; `pipelines.handoff` is the stage that writes them."""
