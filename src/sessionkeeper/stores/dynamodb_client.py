"""The DynamoDB client SESSION_DYNAMODB names, with timeouts fit for web requests.

The store speaks DynamoDB's low-level attribute format (``{"S": "..."}``). A boto3
*resource*'s client converts every request from Python values and every answer back
(handlers boto3 registers on it), so a resource's client is used through
:class:`ResourceClient`, which hands it Python values and turns its answers back.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import boto3
from boto3.dynamodb.types import TypeDeserializer, TypeSerializer
from botocore.client import BaseClient
from botocore.config import Config
from botocore.exceptions import BotoCoreError

from ..errors import ConfigurationError

logger = logging.getLogger("sessionkeeper")

#: Flask-Session's client when SESSION_DYNAMODB is None: a local DynamoDB
DEFAULT_ENDPOINT = "http://localhost:8000"
DEFAULT_REGION = "us-west-2"
DEFAULT_TIMEOUT = 2.0
#: attempts in all (one retry): throttling and a dropped connection usually pass at once
MAX_ATTEMPTS = 2
POOL_SIZE = 64
#: botocore's own timeouts are 60 s, with up to 10 attempts on DynamoDB: a hung endpoint
#: would hold a request for many minutes
SLOW_CLIENT = 10.0

#: request and answer members holding attribute values (name -> value maps)
_REQUEST_MAPS = ("Key", "Item", "ExpressionAttributeValues", "ExclusiveStartKey")
_ANSWER_MAPS = ("Item", "Attributes", "LastEvaluatedKey")

_ACCEPTED = ("SESSION_DYNAMODB must be a boto3 DynamoDB resource "
             "(boto3.resource('dynamodb', ...)), a DynamoDB client, an endpoint URL, or None")


def client_config(timeout: float) -> Config:
    return Config(connect_timeout=timeout, read_timeout=timeout,
                  retries={"total_max_attempts": MAX_ATTEMPTS, "mode": "standard"},
                  max_pool_connections=POOL_SIZE)


class ResourceClient:
    """A boto3 resource's client, spoken to in the low-level format all the same."""

    def __init__(self, client: BaseClient) -> None:
        self.client = client
        self.meta = client.meta
        self._to_python = TypeDeserializer().deserialize
        self._to_wire = TypeSerializer().serialize

    def __getattr__(self, operation: str) -> Callable[..., dict[str, Any]]:
        method = getattr(self.client, operation)

        def call(**request: Any) -> dict[str, Any]:
            for member in _REQUEST_MAPS:
                if member in request:
                    request[member] = {name: self._to_python(value)
                                       for name, value in request[member].items()}
            answer: dict[str, Any] = method(**request)
            for member in _ANSWER_MAPS:
                if member in answer:
                    answer[member] = self._wire(answer[member])
            if "Items" in answer:
                answer["Items"] = [self._wire(item) for item in answer["Items"]]
            return answer

        return call

    def _wire(self, values: dict[str, Any]) -> dict[str, Any]:
        return {name: self._to_wire(value) for name, value in values.items()}

    def close(self) -> None:
        self.client.close()


def client_from_setting(value: Any, timeout: float) -> tuple[Any, bool]:
    """The client SESSION_DYNAMODB describes, and whether the store made (owns) it."""
    if value is None:
        # Flask-Session's fallback: a local DynamoDB with dummy credentials.
        logger.warning("SESSION_DYNAMODB is not set: using a local DynamoDB at %s "
                       "(as Flask-Session does)", DEFAULT_ENDPOINT)
        client = boto3.client("dynamodb", endpoint_url=DEFAULT_ENDPOINT,
                              region_name=DEFAULT_REGION, aws_access_key_id="dummy",
                              aws_secret_access_key="dummy", config=client_config(timeout))
        return client, True
    if isinstance(value, str):
        if not value.startswith(("http://", "https://")):
            raise ConfigurationError(f"{_ACCEPTED}, not {value!r}")
        try:
            # Region and credentials come from the usual AWS settings (environment,
            # ~/.aws/config, an instance role).
            client = boto3.client("dynamodb", endpoint_url=value,
                                  config=client_config(timeout))
        except BotoCoreError as exc:
            raise ConfigurationError(f"SESSION_DYNAMODB={value!r}: {exc}") from exc
        return client, True
    if isinstance(value, BaseClient):
        _check_service(value, value)
        _warn_about(value)
        return value, False
    resource_client = getattr(getattr(value, "meta", None), "client", None)
    if isinstance(resource_client, BaseClient):  # a boto3 service resource
        _check_service(resource_client, value)
        _warn_about(resource_client)
        return ResourceClient(resource_client), False
    raise ConfigurationError(f"{_ACCEPTED}, not a {_type_name(value)}")


def _check_service(client: BaseClient, given: object) -> None:
    if client.meta.service_model.service_name != "dynamodb":
        raise ConfigurationError(f"{_ACCEPTED}, not a {_type_name(given)}")


def _type_name(value: object) -> str:
    return f"{type(value).__module__}.{type(value).__qualname__}"


def _warn_about(client: BaseClient) -> None:
    """Log the settings of a client the app built that hurt sessions."""
    config = client.meta.config
    slowest = max(float(config.connect_timeout or 0), float(config.read_timeout or 0))
    retries = config.retries or {}
    attempts = retries.get("total_max_attempts")
    if attempts is None and retries.get("max_attempts") is not None:
        attempts = retries["max_attempts"] + 1  # it counts retries, not attempts
    if slowest > SLOW_CLIENT or attempts is None or attempts > 3:
        logger.warning(
            "SESSION_DYNAMODB client waits up to %.0fs per attempt with %s attempts: a "
            "hung endpoint holds requests for minutes; create it with config=botocore."
            "config.Config(connect_timeout=2, read_timeout=2, retries={"
            "'total_max_attempts': 2, 'mode': 'standard'})",
            slowest, attempts or "botocore's default")
