"""What a person looks at, apart from where it is shown: tensors as images and labelled grids (image_utils),
static HTML pages of images (html), and the layout of a run's curves as PNG figures (figures). The dashboard's
sinks, test.py's results page and scripts/analysis/plot_logs.py all draw with these; nothing here talks to a
server."""
