"""Fixtures of the agent tests: the fake LLM server of the LLM tests (``llm.fakellm``)."""

from __future__ import annotations

from llm.fakellm import clean_llm_env as clean_llm_env
from llm.fakellm import fake_llm as fake_llm
from llm.fakellm import llm_server_factory as llm_server_factory
from llm.fakellm import make_client as make_client
from llm.fakellm import sleeps as sleeps
