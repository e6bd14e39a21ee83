"""Python client for the modelwatch telemetry daemon.

Quickstart::

    import logging, modelwatch
    client = modelwatch.init(target="127.0.0.1:7070", service="ocr", models=[("card-detector", "v2")])

    @modelwatch.monitor(model="mgeo")
    def geocode(text): ...

    with client.inference("card-detector", request_id=rid) as ev:
        ev.labels["card_type"] = "id_card"
        with ev.stage("inference"):
            boxes = detector(image)

    logging.getLogger().addHandler(modelwatch.LoggingHandler(client))
"""
from modelwatch.client import STAGES, Client, Inference, LoggingHandler, init, monitor

__all__ = ["Client", "Inference", "LoggingHandler", "STAGES", "init", "monitor"]
__version__ = "0.1.0"
