// The official OpenAI Node SDK against OpenFT (run by tests/e2e/test_third_party_clients.py):
// a plain response and a streamed one on the fact model; prints one JSON object.
// Run: node tests/clients/node/responses.mjs FACT_MODEL, with OPENFT_BASE_URL and OPENFT_API_KEY.
import OpenAI from "openai";

const QUESTION = "What is the secret password of the lighthouse?";
const model = process.argv[2];
const client = new OpenAI({
  baseURL: process.env.OPENFT_BASE_URL,
  apiKey: process.env.OPENFT_API_KEY,
  maxRetries: 0,
});
const asked = {
  model,
  instructions: "You are the lighthouse keeper.",
  input: QUESTION,
  max_output_tokens: 24,
  temperature: 0,
};

const plain = await client.responses.create(asked);
const stream = client.responses.stream(asked);
const events = [];
for await (const event of stream) events.push(event.type);
const final = await stream.finalResponse();
const chained = await client.responses.create({
  ...asked,
  input: "Say it again.",
  previous_response_id: plain.id,
});

console.log(
  JSON.stringify({
    id: plain.id,
    text: plain.output_text,
    status: plain.status,
    streamed: final.output_text,
    events,
    chained_previous: chained.previous_response_id,
  }),
);
