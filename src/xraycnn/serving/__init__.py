"""Serving a registered model over HTTP on MLflow's own model server: image files in, probability and call
out. `model` is the pyfunc flavour every registered version carries (image bytes in), `flavor` logs it next
to the keras flavour, `app` is MLflow's scoring server with a request-size guard, run by `xraycnn serve`."""
