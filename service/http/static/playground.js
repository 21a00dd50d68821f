// The playground: classifies the texts typed in (one per line) through the HTTP API (/v1/model and
// /v1/predict, protobuf's JSON mapping of sentiment.v1), shows each text's label, probabilities and
// words coloured by how far each moved the answer (the explanation measured on the model) or by
// attention rollout (where it looked), as the person chooses, and on request every layer's and
// head's attention heatmap.
// It loads nothing but its own origin's files (the server sends Content-Security-Policy: default-src
// 'self'), so every node is built here and styled through the CSSOM, never from markup.

const page = {
  form: document.getElementById("predict-form"),
  texts: document.getElementById("texts"),
  submit: document.getElementById("submit"),
  keys: document.querySelector(".submit-keys"),
  model: document.getElementById("model"),
  modelDetails: document.getElementById("model-details"),
  tokenForm: document.getElementById("token-form"),
  tokenHint: document.getElementById("token-hint"),
  token: document.getElementById("token"),
  error: document.getElementById("error"),
  status: document.getElementById("status"),
  results: document.getElementById("results"),
  colourBy: document.getElementById("colour-by"),
};

let model = null; // GET /v1/model's answer, once it has come
let busy = false; // a classification is in flight
let refocusSubmit = false; // the button had the focus when disabling it took it away
// The access token, when the server asked for one: held in this variable only, never written to
// storage, a cookie or the URL, so it is gone when the page is closed.
let token = null;
const awaitingToken = new Map(); // calls the server refused for want of a token, by name: rerun with it

/** A call the server (or the network) failed, with the server's message when it sent one. */
class ApiError extends Error {
  constructor(status, code, message, sentToken) {
    super(message);
    this.status = status;
    this.code = code;
    this.sentToken = sentToken; // the token the call carried
  }
}

/** One JSON call to the API, relative to the page so that a path prefix in front of it still works. */
async function call(method, path, body) {
  const sentToken = token;
  const headers = { Accept: "application/json" };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  if (sentToken !== null) headers.Authorization = `Bearer ${sentToken}`;
  let response;
  try {
    response = await fetch(path, {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
      cache: "no-store",
      credentials: "omit",
    });
  } catch {
    throw new ApiError(0, "UNAVAILABLE", "The server could not be reached: is it running?", sentToken);
  }
  let payload = null;
  try {
    payload = await response.json();
  } catch {
    // not JSON: a proxy's error page, say; the status line says enough
  }
  if (!response.ok || payload === null) {
    const message = payload?.error || `The server answered ${response.status} ${response.statusText}.`;
    throw new ApiError(response.status, payload?.code ?? "", message, sentToken);
  }
  return payload;
}

function predict(texts, attention, explain) {
  return call("POST", "v1/predict", explain ? { texts, attention, explain } : { texts, attention });
}

/** Which picture colours the words: "contributions" (what moved the answer) or "attention". */
function colouring() {
  return page.colourBy.querySelector("input:checked")?.value ?? "contributions";
}

const LEGENDS = {
  contributions:
    "Each word is coloured by how far it moved the answer, measured by reading the text without it " +
    "(sampled Shapley values): green towards positive, red towards negative, the strongest word " +
    "fully. This is the faithful picture: remove the words it colours most and the answer falls " +
    "furthest (the model card's figures).",
  attention:
    "Each word's background is as strong as its share of the attention rollout from [CLS]: the word " +
    "the model leaned on most gets the full colour. Attention shows where the model looked, not why " +
    "it answered so.",
};

// ---- words coloured by attention: the same words and colours as sentiment_client/_render.py ----

/** The text's words with their share of the weight (sentiment_client._render.shown_words): a WordPiece
 * continuation ("##able") joins the word before it and adds its weight to it; [CLS] (first) and [SEP]
 * (last) are left out, since they soak up most of the attention and wash out the words, unless the
 * text has no word of its own; the weights are renormalised over the words shown. */
function shownWords(tokens, values) {
  const n = tokens.length;
  const words = [];
  tokens.forEach((text, index) => {
    const special = index === 0 || index === n - 1;
    if (special && n > 2) return;
    const last = words[words.length - 1];
    if (text.startsWith("##") && text.length > 2 && last && !last.special) {
      last.text += text.slice(2);
      last.weight += values[index];
    } else {
      words.push({ text, weight: values[index], special });
    }
  });
  const total = words.reduce((sum, word) => sum + word.weight, 0) || 1;
  for (const word of words) word.weight /= total;
  return words;
}

/** How strongly to colour each word, 0 to 1: the largest word's weight gets the full colour. */
function strengths(words) {
  const plain = words.filter((word) => !word.special);
  const top = Math.max(0, ...(plain.length ? plain : words).map((word) => word.weight)) || 1;
  return words.map((word) => Math.min(1, word.weight / top));
}

/** Python's round(): halves go to the even neighbour, so that a colour here is the terminal's. */
function roundHalfEven(x) {
  const nearest = Math.round(x);
  return Math.abs(x % 1) === 0.5 && nearest % 2 !== 0 ? nearest - 1 : nearest;
}

/** White for no weight to full red (negative) or green (any other label) for the strongest. */
function rgb(strength, label) {
  const level = roundHalfEven(255 - 215 * strength);
  return label === "negative" ? [255, level, level] : [level, 255, level];
}

function css([red, green, blue]) {
  return `rgb(${red}, ${green}, ${blue})`;
}

// ---- building the page ----

function element(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined) node.textContent = text;
  return node;
}

/** "1 text", "2 texts". */
function count(n, noun) {
  return `${n} ${noun}${n === 1 ? "" : "s"}`;
}

function percent(share) {
  return `${(100 * share).toFixed(share >= 0.1 ? 0 : 1)}%`;
}

function showError(message) {
  page.error.textContent = message;
  page.error.hidden = false;
}

function clearError() {
  page.error.textContent = "";
  page.error.hidden = true;
}

function describe(err) {
  const retry = ["RESOURCE_EXHAUSTED", "UNAVAILABLE"].includes(err.code) ? " Try again in a moment." : "";
  return `${err.message}${retry}`;
}

function setBusy(on) {
  if (on) refocusSubmit = document.activeElement === page.submit;
  busy = on;
  page.submit.disabled = on;
  page.submit.textContent = on ? "Classifying…" : "Classify";
  page.results.setAttribute("aria-busy", String(on));
  if (!on && refocusSubmit && document.activeElement === document.body) page.submit.focus();
}

function showModel(info) {
  page.model.textContent = `${info.name} v${info.version}`;
  const details = [
    `${count(info.numLayers, "layer")} × ${count(info.numHeads, "head")}`,
    `${count(info.maxLength, "token")} per text`,
    `up to ${count(info.maxTextsPerRequest, "text")} per request`,
  ];
  page.modelDetails.textContent = `(${details.join(", ")})`;
}

/** Everything after the results' heading. */
function clearResults() {
  while (page.results.lastElementChild && page.results.lastElementChild.id !== "results-title") {
    page.results.lastElementChild.remove();
  }
}

function showResults(texts, answer, note) {
  clearResults();
  const legend = element("p", "legend", LEGENDS[colouring()]);
  legend.id = "legend";
  page.results.append(legend);
  if (note) page.results.append(element("p", "note", note));
  const list = element("ol", "result-list");
  answer.predictions.forEach((prediction, index) => list.append(result(texts[index], index, prediction)));
  page.results.append(list);
  const n = answer.predictions.length;
  const summary = answer.predictions
    .slice(0, 3)
    .map((p) => `${p.label} ${p.score.toFixed(2)}`)
    .join(", ");
  page.status.textContent = `Classified ${count(n, "text")}: ${summary}${n > 3 ? ", …" : ""}.`;
}

function result(text, index, prediction) {
  const item = element("li", "result");
  const head = element("h3", "result-head");
  head.append(element("span", "number", `Text ${index + 1}`));
  const label = element("span", "label", prediction.label);
  label.dataset.label = prediction.label;
  head.append(label);
  const score = element("span", "score-line", "score ");
  score.append(element("span", "score", prediction.score.toFixed(3)));
  head.append(score);
  item.append(head);
  item.append(element("p", "text", text));
  if (prediction.truncated) {
    item.append(
      element(
        "p",
        "truncated",
        `Only the first ${prediction.numTokens} tokens were read: the text is longer than the model takes.`,
      ),
    );
  }
  const shown = colouring();
  const explanation = prediction.explanation;
  if (explanation?.words?.length) {
    const why = element("div", "picture");
    why.dataset.picture = "contributions";
    why.hidden = shown !== "contributions";
    why.append(contributionsLine(explanation), movedMost(explanation));
    item.append(why);
  }
  const attention = prediction.attention;
  if (attention?.tokens?.length) {
    const words = shownWords(attention.tokens, attention.rollout);
    const looked = element("div", "picture");
    looked.dataset.picture = "attention";
    looked.hidden = shown !== "attention" && Boolean(explanation?.words?.length);
    looked.append(wordsLine(words, prediction.label), topWords(words));
    item.append(looked);
  }
  item.append(probabilities(prediction.probabilities, prediction.label));
  item.append(heatmaps(text, prediction.label));
  return item;
}

function wordsLine(words, label) {
  const line = element("p", "words");
  strengths(words).forEach((strength, index) => {
    const word = words[index];
    const span = element("span", "word", word.text);
    span.style.backgroundColor = css(rgb(strength, label));
    span.title = `${percent(word.weight)} of the attention`;
    line.append(span, " ");
  });
  return line;
}

/** The label a push away from `label` goes towards: the other of negative and positive. */
function away(label) {
  return label === "negative" ? "positive" : "negative";
}

/** Each word on the colour of the label it pushed towards, as strong as its contribution against the
 * largest (sentiment_client._render.contribution_text). */
function contributionsLine(explanation) {
  const line = element("p", "words contributions");
  const values = explanation.words.map((word) => word.contribution ?? 0);
  const top = Math.max(0, ...values.map(Math.abs)) || 1;
  explanation.words.forEach((word, index) => {
    const value = values[index];
    const towards = value >= 0 ? explanation.label : away(explanation.label);
    const span = element("span", "word", word.text);
    span.style.backgroundColor = css(rgb(Math.min(1, Math.abs(value) / top), towards));
    span.title = `${signed(value)} to the probability of ${explanation.label}`;
    span.dataset.contribution = String(value);
    line.append(span, " ");
  });
  return line;
}

function signed(value) {
  return `${value >= 0 ? "+" : "−"}${Math.abs(value).toFixed(2)}`;
}

/** The words that moved the answer most, in words. */
function movedMost(explanation) {
  const top = [...explanation.words]
    .sort((a, b) => Math.abs(b.contribution ?? 0) - Math.abs(a.contribution ?? 0))
    .slice(0, 3);
  const named = top
    .map((word) => {
      const value = word.contribution ?? 0;
      return `“${word.text}” ${signed(value)} towards ${value >= 0 ? explanation.label : away(explanation.label)}`;
    })
    .join(", ");
  return element("p", "top-words", `Moved the answer most: ${named}.`);
}

/** At least as many words as the server counts to explain `texts`: each run of letters and digits,
 * and each run of other characters that are not spaces (the server joins some of these, "wasn't",
 * and reads no word past the model's window), so that a request the page sends is not refused. */
function wordsAtMost(texts) {
  return texts.reduce((sum, text) => sum + (text.match(/[\p{L}\p{N}]+|[^\p{L}\p{N}\s]+/gu) ?? []).length, 0);
}

/** Shows the chosen picture of every result, without asking the server again. */
function switchPicture() {
  const shown = colouring();
  const legend = document.getElementById("legend");
  if (legend) legend.textContent = LEGENDS[shown];
  for (const picture of page.results.querySelectorAll(".picture")) {
    const siblings = picture.parentElement.querySelectorAll(".picture").length;
    picture.hidden = siblings > 1 && picture.dataset.picture !== shown;
  }
}

/** The colours in words, for those who do not see them. */
function topWords(words) {
  const top = [...words].sort((a, b) => b.weight - a.weight).slice(0, 3);
  const named = top.map((word) => `“${word.text}” ${percent(word.weight)}`).join(", ");
  return element("p", "top-words", `Most attention: ${named}.`);
}

function probabilities(values, winner) {
  const labels = model?.labels ?? values.map((_, index) => `label ${index}`);
  const list = element("ul", "probabilities");
  list.setAttribute("aria-label", "Probabilities");
  values.forEach((value, index) => {
    const row = element("li");
    row.append(element("span", "probability-label", labels[index]));
    const bar = element("span", "bar");
    const fill = element("span", "fill");
    fill.style.width = `${(100 * value).toFixed(1)}%`;
    fill.style.backgroundColor = css(rgb(labels[index] === winner ? 0.8 : 0.35, labels[index]));
    bar.append(fill);
    row.append(bar, element("span", "probability", value.toFixed(3)));
    list.append(row);
  });
  return list;
}

// ---- heatmaps, each layer and head ----

// The full weights are fetched for one text, when its heatmaps are opened: they hold
// layers × heads × tokens² numbers per text (2 × 4 × 128² = 131,072 for a small model, over a
// megabyte of JSON), so asking for them with every text of a long paste would make one answer
// hundreds of megabytes for pictures mostly never looked at. The summary (tokens, rollout) comes
// with every text.
function heatmaps(text, label) {
  const details = element("details", "heatmaps");
  details.append(element("summary", "", "Attention heatmaps, every layer and head"));
  const body = element("div", "heatmap-body");
  details.append(body);
  let asked = false;
  const load = async () => {
    body.textContent = "Loading the attention weights…";
    body.setAttribute("aria-busy", "true");
    try {
      const answer = await predict([text], "ATTENTION_MODE_FULL");
      drawHeatmaps(body, answer.predictions[0].attention, label);
    } catch (err) {
      if (err instanceof ApiError && err.status === 401) {
        body.textContent = "Waiting for the access token…";
        askForToken(`heatmaps:${text}`, load, err);
        return;
      }
      asked = false; // closing and opening again tries again
      body.textContent = "The heatmaps could not be loaded.";
      showError(describe(err));
    } finally {
      body.setAttribute("aria-busy", "false");
    }
  };
  details.addEventListener("toggle", () => {
    if (details.open && !asked) {
      asked = true;
      load();
    }
  });
  return details;
}

function drawHeatmaps(body, attention, label) {
  body.replaceChildren(
    element(
      "p",
      "hint",
      "Row: the token that looks; column: the token it looks at. Each row is scaled to its largest " +
        "weight. Point at a cell to read its weight.",
    ),
  );
  const grid = element("div", "heatmap-grid");
  for (let layer = 0; layer < attention.numLayers; layer++) {
    for (let head = 0; head < attention.numHeads; head++) {
      grid.append(heatmap(attention, layer, head, label));
    }
  }
  body.append(grid);
}

function tokenLabels(className, tokens) {
  const box = element("div", className);
  box.setAttribute("aria-hidden", "true"); // the canvas's label describes the picture
  for (const text of tokens) {
    const span = element("span", "", text);
    span.title = text;
    box.append(span);
  }
  return box;
}

/** One head's weights as a canvas of one pixel per (query, key), scaled up by CSS, in the 32 shades
 * the HTML rendering uses (sentiment_client._render._heatmap_png), with the tokens on both axes. */
function heatmap(attention, layer, head, label) {
  const tokens = attention.tokens;
  const n = tokens.length;
  const start = (layer * attention.numHeads + head) * n * n;
  const weights = attention.weights.slice(start, start + n * n);
  const name = `Layer ${layer + 1}, head ${head + 1}`;

  const figure = element("figure", "heatmap");
  figure.append(element("figcaption", "", name));
  const scroller = element("div", "map-scroll");
  scroller.tabIndex = 0; // a long text's map scrolls inside its box: with the arrow keys too
  scroller.setAttribute("role", "group");
  scroller.setAttribute("aria-label", name);
  const map = element("div", "map");
  map.style.setProperty("--n", String(n));
  const canvas = element("canvas");
  canvas.width = n;
  canvas.height = n;
  canvas.setAttribute("role", "img");
  canvas.setAttribute("aria-label", `${name}: how much each token (row) attends to each token (column)`);
  const context = canvas.getContext("2d");
  const image = context.createImageData(n, n);
  for (let query = 0; query < n; query++) {
    const row = weights.slice(query * n, (query + 1) * n);
    const top = Math.max(...row) || 1;
    row.forEach((value, key) => {
      const [red, green, blue] = rgb(roundHalfEven((31 * value) / top) / 31, label);
      image.data.set([red, green, blue, 255], 4 * (query * n + key));
    });
  }
  context.putImageData(image, 0, 0);
  map.append(element("div", "corner"), tokenLabels("keys", tokens), tokenLabels("queries", tokens), canvas);
  scroller.append(map);
  figure.append(scroller);

  const readout = element("p", "readout");
  canvas.addEventListener("pointermove", (event) => {
    const query = Math.min(n - 1, Math.floor((event.offsetY / canvas.clientHeight) * n));
    const key = Math.min(n - 1, Math.floor((event.offsetX / canvas.clientWidth) * n));
    readout.textContent = `${tokens[query]} → ${tokens[key]}: ${weights[query * n + key].toFixed(3)}`;
  });
  canvas.addEventListener("pointerleave", () => {
    readout.textContent = "";
  });
  figure.append(readout);
  return figure;
}

// ---- what the person does ----

/** The lines that hold a text, each with its line number for the messages. */
function linesOf(value) {
  return value
    .split(/\r?\n/)
    .map((text, index) => ({ text: text.trim(), line: index + 1 }))
    .filter((entry) => entry.text !== "");
}

/** Why the texts cannot be sent as they are, or null; the server checks again, this only saves a trip. */
function refusal(lines) {
  if (lines.length === 0) return "Nothing to classify: type or paste a text, one per line.";
  if (!model) return null;
  if (lines.length > model.maxTextsPerRequest) {
    const over = lines.length - model.maxTextsPerRequest;
    return (
      `${lines.length} texts; the limit is ${model.maxTextsPerRequest} per request. ` +
      `Remove ${count(over, "line")}, or classify them in parts.`
    );
  }
  const long = lines.find((entry) => [...entry.text].length > model.maxTextChars);
  if (long) {
    return (
      `Line ${long.line} has ${[...long.text].length} characters; ` +
      `the limit is ${model.maxTextChars} per text.`
    );
  }
  return null;
}

async function classify(texts) {
  setBusy(true);
  page.status.textContent = `Classifying ${count(texts.length, "text")}…`;
  try {
    const words = wordsAtMost(texts);
    const limit = model?.maxExplainedWords ?? 0;
    let answer;
    let note = "";
    if (words <= limit) {
      try {
        answer = await predict(texts, "ATTENTION_MODE_SUMMARY", "EXPLAIN_MODE_SHAPLEY");
      } catch (err) {
        // the server counted more words to explain than the page did: the answers still come
        if (!(err instanceof ApiError && err.status === 400 && /explain/.test(err.message))) throw err;
        note = `${err.message} `;
      }
    } else {
      note = `These texts hold up to ${count(words, "word")}, more than the server explains in one request (${limit}). `;
    }
    if (!answer) {
      answer = await predict(texts, "ATTENTION_MODE_SUMMARY");
      note += "Showing attention only; classify fewer texts to see what moved each answer.";
    }
    showResults(texts, answer, note);
  } catch (err) {
    page.status.textContent = "";
    if (err instanceof ApiError && err.status === 401) askForToken("predict", () => classify(texts), err);
    else showError(describe(err));
  } finally {
    setBusy(false);
  }
}

function submit() {
  if (busy) return;
  clearError();
  const lines = linesOf(page.texts.value);
  const reason = refusal(lines);
  if (reason) {
    showError(reason);
    page.texts.focus();
    return;
  }
  classify(lines.map((entry) => entry.text));
}

async function loadModel() {
  try {
    model = await call("GET", "v1/model");
    showModel(model);
  } catch (err) {
    if (err instanceof ApiError && err.status === 401) {
      page.model.textContent = "waiting for the access token";
      askForToken("model", loadModel, err);
    } else {
      page.model.textContent = "unknown";
      showError(`The model's description could not be read: ${describe(err)}`);
    }
  }
}

/** Shows the token form; `retry` runs again once a token is given. */
function askForToken(name, retry, err) {
  if (token !== err.sentToken) {
    retry(); // a token was given while this call was out: it has not been tried yet
    return;
  }
  awaitingToken.set(name, retry);
  page.tokenHint.textContent =
    token === null
      ? "This server asks for an access token."
      : `The server refused that token (${err.message}). Check it and try again.`;
  const opening = page.tokenForm.hidden;
  page.tokenForm.hidden = false;
  if (opening || token !== null) page.token.focus();
}

page.tokenForm.addEventListener("submit", (event) => {
  event.preventDefault();
  const value = page.token.value.trim();
  if (!value) {
    page.tokenHint.textContent = "Type the token first.";
    page.token.focus();
    return;
  }
  token = value;
  page.token.value = ""; // the variable holds it; the page's fields do not
  page.tokenForm.hidden = true;
  page.texts.focus();
  const retries = [...awaitingToken.values()];
  awaitingToken.clear();
  for (const retry of retries) retry();
});

page.form.addEventListener("submit", (event) => {
  event.preventDefault();
  submit();
});

page.colourBy.addEventListener("change", switchPicture);

page.texts.addEventListener("keydown", (event) => {
  if (event.key === "Enter" && (event.ctrlKey || event.metaKey)) {
    event.preventDefault();
    submit();
  }
});

if (/Mac|iPhone|iPad/.test(navigator.userAgentData?.platform ?? navigator.platform)) {
  page.keys.textContent = "⌘+Enter";
}

loadModel();
