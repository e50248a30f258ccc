"""Online serving: bundle, registry, HTTP service, canary/shadow routing, drift, impression log.

    export-bundle (app/) -> bundle folder -> registry add/promote -> serve (service.py)
        POST /recommend -> routing (live | canary by user hash) -> two_stage.recommend
            -> response, impression log row, drift counts; shadow copy after the response

A library layer: it takes typed arguments and never reads the experiment config.
"""
