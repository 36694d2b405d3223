"""A marimo notebook for the browser test (``test_marimo.py``): the run's widget, the jobs
panel and an estimate, against a local emulator whose counts advance."""

import marimo

app = marimo.App(width="medium")


@app.cell
def _():
    import os

    import pandas as pd

    from gemini_batch_magic.emulator import Emulator, EmulatorConfig

    live = {"progress": "live"} if "progress" in EmulatorConfig.__dataclass_fields__ else {}
    emu = Emulator(pending_seconds=2.0, rate=5.0, **live).start()
    os.environ["GOOGLE_GEMINI_BASE_URL"] = emu.url
    import gemini_batch_magic as gbm

    gbm.configure(poll_interval=0.5, max_poll_interval=1.0)
    reviews = pd.DataFrame(
        {"text": [f"Review {i}: the battery lasts {i % 7 + 1} days." for i in range(40)]},
        index=pd.Index([f"r{i}" for i in range(40)], name="review_id"))
    return gbm, reviews


@app.cell
def _(gbm, reviews):
    run = gbm.submit(reviews, "text", name="marimo-live")
    run.widget()
    return


@app.cell
def _(gbm, reviews):
    gbm.estimate(reviews, "text")
    return


@app.cell
def _(gbm):
    gbm.panel()
    return


if __name__ == "__main__":
    app.run()
