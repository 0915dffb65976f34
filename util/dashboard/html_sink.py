"""The run's HTML page (`<run_dir>/web/index.html`): the curves at a readable size, then the visuals of every
snapshot, newest first. Written by a background thread (FileWorker), atomically; it reloads itself while a
training process writes it and stops reloading when that process ends. Nothing is written through a symbolic
link in the run folder (`web/`, `web/images/`, `index.html`, `saved_steps.jsonl`: util.run.links)."""
import json
import os
import time

from util.dashboard.history import VALIDATION, convergence_panels, images_seen, line_panels, loss_panels
from util.dashboard.workers import FileWorker
from util.views.figures import draw_panels
from util.views.html import HTML
from util.views.image_utils import save_image
from util.run import links
from util.run.run_logs import TIME_FORMAT


class HtmlSink:
    """`web/index.html`, `web/images/` (snapshots and plots) and `web/saved_steps.jsonl` (the snapshots, one
    JSON line each, so a resumed run keeps the earlier ones)."""

    name = "HTML page"

    def __init__(self, run_dir, name, *, model=None, planned_epochs=None, winsize=256, refresh=30):
        self.run_name = name
        self.model = model
        self.planned_epochs = planned_epochs
        self.winsize = int(winsize)
        self.refresh = refresh
        self.web_dir = os.path.join(str(run_dir), "web")
        self.img_dir = os.path.join(self.web_dir, "images")
        self.steps_file = os.path.join(self.web_dir, "saved_steps.jsonl")
        self.plots = {kind: os.path.join(self.img_dir, f"{kind}.png") for kind in ("losses", "convergence",
                                                                                   VALIDATION)}
        self._drawn = {}  # png path -> number of points it shows, so unchanged plots are not redrawn
        self.run_dir = str(run_dir)
        for path in (self.img_dir, os.path.join(self.web_dir, "index.html"), self.steps_file):
            links.check_inside(path, self.run_dir)  # before anything is created
        os.makedirs(self.img_dir, exist_ok=True)
        self.files = FileWorker()
        newest = self.saved_steps()[:1]
        self.at = (newest[0]["epoch"], newest[0]["step"]) if newest else None  # (epoch, images seen) of the newest view

    # ------------------------------------------------------------------ events from the dashboard
    def start(self, history):
        self._submit_page(history)

    def losses(self, history, x, step, values):
        pass  # the loss plot is redrawn with the page (snapshots, epochs), not at every print

    def convergence(self, history, epoch, value):
        self._submit_page(history)

    def lines(self, history, name, x, values):
        self._submit_page(history)

    def images(self, history, images, labels, epoch, step, snapshot):
        epoch, step = int(epoch), int(step)
        self.at = (epoch, step)
        if not snapshot:
            return
        names = [f"epoch{epoch:03d}_step{step:09d}_{label}.png" for label in labels]

        def save_step():
            for file_name, image in zip(names, images):
                save_image(image, os.path.join(self.img_dir, file_name))
            record = dict(epoch=epoch, step=step, labels=list(labels), files=names)
            with links.open_inside(self.steps_file, self.run_dir, "a") as handle:
                handle.write(json.dumps(record) + "\n")

        self.files.submit(("step", epoch, step), save_step)
        self._submit_page(history)

    def flush(self, timeout=None):
        return self.files.flush(timeout)

    def close(self, history, timeout, ended):
        """The last page: current plots, how training ended, and no reload (no process writes it any more)."""
        self._submit_page(history, ended=ended)
        self.files.close(timeout=timeout)

    # ------------------------------------------------------------------ the page
    def _submit_page(self, history, ended=None):
        """Queue a redraw of the plots and the page, with the curves as they are now."""
        run = self.run_name
        figures = [("losses", loss_panels(history, run), f"{run}: losses", len(history.losses)),
                   ("convergence", convergence_panels(history), f"{run}: convergence", len(history.convergence)),
                   (VALIDATION, line_panels(history, VALIDATION, run), f"{run}: validation",
                    len(history.lines.get(VALIDATION, ())))]

        def draw_page():
            for kind, panels, title, points in figures:
                path = self.plots[kind]
                if panels and self._drawn.get(path) != points:
                    draw_panels(panels, path=path, title=title)
                    self._drawn[path] = points
            self.save_html(ended)

        self.files.submit("page", draw_page)

    def heading(self):
        """The page's title and visible heading: the run, its model and the epochs it plans."""
        parts = [f"run {self.run_name}"]
        if self.model:
            parts.append(f"model {self.model}")
        if self.planned_epochs:
            count = int(self.planned_epochs)
            parts.append(f"{count} epoch{'' if count == 1 else 's'} planned")
        return " · ".join(parts)

    def position(self):
        """'epoch 3 of 8, 1,200 images seen' for the newest snapshot or display ('' before the first)."""
        if self.at is None:
            return ""
        of = f" of {int(self.planned_epochs)}" if self.planned_epochs else ""
        return f"epoch {self.at[0]}{of}, {images_seen(self.at[1])}"

    def save_html(self, ended=None):
        """Rebuild `web/index.html`: heading, status, the plots, then the visuals of every saved step, newest
        first. `ended` (how training ended, e.g. "finished 8 of 8 epochs") writes the page of a run no process
        writes any more."""
        now = time.strftime(TIME_FORMAT)
        links.check_inside(os.path.join(self.web_dir, "index.html"), self.run_dir)
        page = HTML(self.web_dir, self.heading(), refresh=0 if ended else self.refresh)
        where = self.position()
        if ended:
            said, _, command = ended.partition("; resumable with ")
            page.add_text(f"Training {said}" + ("; resumable with:" if command else "."))
            if command:
                page.add_command(command)
            page.add_text((f"Last view: {where}. " if where else "") + f"This page was written {now} and no longer "
                          "reloads.")
        else:
            page.add_text(f"Training is running{': ' + where if where else ''}. This page was written {now} and "
                          f"reloads every {self.refresh} s.")
        plots = [p for p in self.plots.values() if os.path.isfile(p)]
        if plots:
            page.add_header("Curves")
            # The query string makes the browser fetch a redrawn plot instead of its cached copy.
            srcs = [f"{os.path.basename(p)}?v={os.stat(p).st_mtime_ns}" for p in plots]
            for src, path in zip(srcs, plots):  # one a row, at the size they were drawn, so labels read
                page.add_images([src], [os.path.splitext(os.path.basename(path))[0]], [src], width=None)
        for record in self.saved_steps():
            page.add_header(f"epoch {record['epoch']}, {images_seen(record['step'])}")
            page.add_images(record["files"], record["labels"], record["files"], width=self.winsize)
        return page.save()

    def saved_steps(self):
        """The saved steps recorded in `web/saved_steps.jsonl`, newest first (one per epoch and step)."""
        if not os.path.isfile(self.steps_file):
            return []
        records = {}
        with open(self.steps_file, encoding="utf-8") as handle:
            for line in handle:
                try:
                    record = json.loads(line)
                except ValueError:
                    continue  # a line cut short by a crash; the other steps still show
                records[(record["epoch"], record["step"])] = record
        return [records[key] for key in sorted(records, reverse=True)]
