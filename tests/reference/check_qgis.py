"""Opens a run's outputs in real QGIS (PyQGIS, headless: offscreen Qt platform) the way an
analyst would, and checks what they would see. Prints a JSON report; exits 1 on a failure.

usage: QT_QPA_PLATFORM=offscreen python3 check_qgis.py CLASSES.tif POLYGONS.gpkg PROJECT.qgs OUT.png
"""
import json
import os
import sys

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

from qgis.core import (  # noqa: E402
    QgsApplication,
    QgsMapRendererSequentialJob,
    QgsMapSettings,
    QgsProject,
    QgsRasterLayer,
    QgsVectorLayer,
)
from qgis.PyQt.QtCore import QSize  # noqa: E402
from qgis.PyQt.QtGui import QColor  # noqa: E402


def main() -> None:
    classes, polygons, project, png = sys.argv[1:5]
    app = QgsApplication([], False)
    app.initQgis()
    rep = {}
    rl = QgsRasterLayer(classes, "classes")
    rep["raster_valid"] = rl.isValid()
    rep["raster_crs"] = rl.crs().authid()
    e = rl.extent()
    rep["raster_extent"] = [e.xMinimum(), e.yMinimum(), e.xMaximum(), e.yMaximum()]
    r = rl.renderer()
    rep["raster_renderer"] = r.type() if r else None
    if r is not None and r.type() == "paletted":
        rep["classes"] = [[int(c.value), c.label, c.color.name()] for c in r.classes()]
    vl = QgsVectorLayer(polygons, "polygons", "ogr")
    rep["vector_valid"] = vl.isValid()
    rep["vector_crs"] = vl.crs().authid()
    rep["vector_features"] = vl.featureCount()
    rep["vector_renderer"] = vl.renderer().type() if vl.renderer() else None
    proj = QgsProject.instance()
    rep["project_read"] = proj.read(project)
    layers = list(proj.mapLayers().values())
    rep["project_layers"] = sorted(l.name() for l in layers)
    rep["project_layers_valid"] = all(l.isValid() for l in layers)
    rep["project_invalid"] = sorted((l.name(), l.source()) for l in layers if not l.isValid())
    rep["project_renderers"] = sorted(
        (l.name(), l.renderer().type()) for l in layers if l.renderer() is not None
    )
    root = proj.layerTreeRoot()
    rep["project_groups"] = [g.name() for g in root.findGroups()]
    settings = QgsMapSettings()
    settings.setLayers(layers)
    settings.setDestinationCrs(rl.crs())
    settings.setExtent(rl.extent())
    settings.setOutputSize(QSize(1024, 512))
    settings.setBackgroundColor(QColor(0, 0, 0, 0))
    job = QgsMapRendererSequentialJob(settings)
    job.start()
    job.waitForFinished()
    img = job.renderedImage()
    rep["png_saved"] = img.save(png, "png")
    colours = {img.pixel(x, y) for x in range(0, img.width(), 8) for y in range(0, img.height(), 8)}
    rep["png_colours"] = len(colours)
    print(json.dumps(rep), flush=True)
    # QgsApplication's teardown can crash after the work is done; leave without it.
    os._exit(0)


if __name__ == "__main__":
    main()
