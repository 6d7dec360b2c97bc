"""OpenTelemetry's OTLP/HTTP (protobuf) span exporter with agentmesh's encoder.

A module of its own: the HTTP exporter (and ``requests``) is imported only by
the services that export over HTTP.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from opentelemetry.exporter.otlp.proto.http import _common as http_common
from opentelemetry.exporter.otlp.proto.http import trace_exporter as http_trace_exporter
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExportResult
from opentelemetry.semconv.attributes.http_attributes import HTTP_RESPONSE_STATUS_CODE

from agentmesh.telemetry.otlp import encode_spans

log = logging.getLogger("agentmesh.telemetry.otlp")


class HttpSpanExporter(http_trace_exporter.OTLPSpanExporter):
    """OpenTelemetry's OTLP/HTTP (protobuf) span exporter, encoding with :func:`encode_spans`.

    The exporter encodes inside ``export``, so ``export`` is the one method
    replaced: the same steps as OpenTelemetry's (1.45), with its own size
    limit, transport and metrics.
    """

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        if self._shutdown:
            log.warning("Exporter already shutdown, ignoring batch")
            return SpanExportResult.FAILURE
        with self._metrics.export_operation(len(spans)) as result:
            try:
                serialized = encode_spans(spans)
            except Exception as exc:
                log.error("Failed to encode span batch: %s", exc)
                result.error = exc
                return SpanExportResult.FAILURE
            if http_common._is_request_too_large(serialized, self._max_request_size):
                log.warning(
                    "Dropping span batch: serialized size %d bytes exceeds max_request_size "
                    "%d bytes.",
                    len(serialized),
                    self._max_request_size,
                )
                result.error = http_common.RequestPayloadTooLargeError(
                    f"Serialized span request size {len(serialized)} bytes exceeds "
                    f"max_request_size {self._max_request_size} bytes."
                )
                return SpanExportResult.FAILURE
            sent = self._client.export(serialized)
            if not sent.success:
                result.error = sent.error
                result.error_attrs = (
                    {HTTP_RESPONSE_STATUS_CODE: sent.status_code}
                    if sent.status_code is not None
                    else None
                )
                return SpanExportResult.FAILURE
        return SpanExportResult.SUCCESS
