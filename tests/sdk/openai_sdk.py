"""The official `openai` Python SDK against the gateway, run by `.ci/run`.

The README gateway (`cargo run -p palisade-gateway`, on its built-in mock)
listens on 127.0.0.1:8080; a second one (tests/sdk/fallback.toml) on
127.0.0.1:8081 falls back from an unreachable OpenAI upstream to the first
as an Anthropic upstream. Checked: the Responses API as JSON, as a raw
event stream and through the SDK's own stream accumulator, a
function-calling round trip, cross-provider fallback of a stateless call
(JSON and streamed), and embeddings (floats, the SDK's default base64,
`dimensions`, token arrays). Exits non-zero at the first failure.
"""

import json
import sys

from openai import OpenAI

gw = OpenAI(base_url="http://127.0.0.1:8080/v1", api_key="unused", max_retries=0, timeout=30)
fallback = OpenAI(base_url="http://127.0.0.1:8081/v1", api_key="unused", max_retries=0, timeout=30)


def check(cond, what, got):
    if not cond:
        print(f"FAILED: {what}; got: {got!r}", file=sys.stderr)
        sys.exit(1)
    print(f"ok: {what}")


# The Responses API, JSON.
r = gw.responses.create(model="mock", instructions="Be brief.", input="hello responses")
check(r.output_text == "hello responses", "responses.create answers", r)
check(r.status == "completed" and r.usage.input_tokens > 0, "with its status and usage", r)

# Streamed: the raw events, numbered.
deltas, kinds, numbers = [], [], []
for ev in gw.responses.create(model="mock", input="streamed hello", stream=True):
    kinds.append(ev.type)
    numbers.append(ev.sequence_number)
    if ev.type == "response.output_text.delta":
        deltas.append(ev.delta)
check("".join(deltas) == "streamed hello", "responses.create(stream=True) streams the text", deltas)
check(kinds[0] == "response.created" and kinds[-1] == "response.completed", "from response.created to response.completed", kinds)
check(numbers == list(range(len(numbers))), "numbered from 0 without a gap", numbers)

# The SDK's stream helper, which rebuilds the response from the events.
with gw.responses.stream(model="mock", input="through the helper") as stream:
    final = stream.get_final_response()
check(final.output_text == "through the helper", "responses.stream rebuilds the answer", final)

# A function-calling round trip.
tools = [{
    "type": "function",
    "name": "get_weather",
    "description": "The weather in a city.",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
}]
history = [{"role": "user", "content": "Oslo"}]
first = gw.responses.create(model="mock", input=history, tools=tools, tool_choice="required")
calls = [item for item in first.output if item.type == "function_call"]
check(len(calls) == 1 and calls[0].name == "get_weather", "the model calls the tool", first.output)
check(json.loads(calls[0].arguments) == {"city": "Oslo"}, "with JSON arguments", calls[0].arguments)
history += first.output
history.append({"type": "function_call_output", "call_id": calls[0].call_id, "output": "Sunny, 21 C"})
second = gw.responses.create(model="mock", input=history, tools=tools)
check(second.output_text == "Oslo", "the call's output goes back and is answered", second)

# Cross-provider fallback: an unreachable OpenAI upstream, then Anthropic.
r = fallback.responses.create(model="fallback", instructions="Be brief.", input="served by anthropic")
check(r.output_text == "served by anthropic", "a stateless Responses call falls back to an Anthropic upstream", r)
check(r.usage.input_tokens > 0 and r.usage.output_tokens == 3, "with the Anthropic usage translated", r.usage)
deltas = [ev.delta for ev in fallback.responses.create(model="fallback", input="streamed across", stream=True)
          if ev.type == "response.output_text.delta"]
check("".join(deltas) == "streamed across", "and streamed, translated event by event", deltas)

# Embeddings.
floats = gw.embeddings.create(model="mock", input=["one two", "three"], encoding_format="float")
check(len(floats.data) == 2 and len(floats.data[0].embedding) == 8, "embeddings.create as floats", floats)
check(floats.usage.prompt_tokens == 3, "with usage", floats.usage)
default = gw.embeddings.create(model="mock", input=["one two", "three"])  # the SDK asks for base64
same = all(abs(a - b) < 1e-6 for a, b in zip(default.data[0].embedding, floats.data[0].embedding))
check(same and len(default.data[0].embedding) == 8, "the SDK's default base64 decodes to the same vector", default.data[0])
short = gw.embeddings.create(model="mock", input="x", dimensions=4)
check(len(short.data[0].embedding) == 4, "dimensions", short.data[0])
tokens = gw.embeddings.create(model="mock", input=[[1, 2, 3], [4]])
check(len(tokens.data) == 2 and tokens.usage.prompt_tokens == 4, "token-array inputs", tokens)

print("openai SDK: every check passed")
