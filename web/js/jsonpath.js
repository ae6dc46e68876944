// jsonpath.js — where each field of a JSON text is, by the paths the server names in its
// validation errors ("model.layers[0].out", "stages[1].epochs", "" for the whole config),
// so the submit page can mark the line of every error. A forgiving scanner, not a
// validator: on broken JSON it keeps what it found before the break.

// Returns Map(path → {start, end}): for a member, from its key's opening quote to the end of
// its value; for an array element or the root, the value itself.
export function locatePaths(text) {
  const spans = new Map();
  let i = 0;

  const space = () => {
    while (i < text.length && /\s/.test(text[i])) i++;
  };
  const fail = () => {
    throw new Error('stop');
  };
  const string = () => {
    if (text[i] !== '"') fail();
    let out = '';
    for (i++; i < text.length && text[i] !== '"'; i++) {
      if (text[i] === '\\') {
        i++;
        out += text[i] === 'u' ? String.fromCharCode(parseInt(text.slice(i + 1, i + 5), 16)) : text[i];
        if (text[i] === 'u') i += 4;
      } else out += text[i];
    }
    if (i >= text.length) fail();
    i++;
    return out;
  };
  const value = (path, start) => {
    space();
    const from = start ?? i;
    const c = text[i];
    if (c === '{') {
      i++;
      space();
      if (text[i] === '}') i++;
      else for (;;) {
        space();
        const keyStart = i;
        const key = string();
        space();
        if (text[i++] !== ':') fail();
        value(path ? `${path}.${key}` : key, keyStart);
        space();
        if (text[i] === ',') { i++; continue; }
        if (text[i++] !== '}') fail();
        break;
      }
    } else if (c === '[') {
      i++;
      space();
      if (text[i] === ']') i++;
      else for (let n = 0; ; n++) {
        value(`${path}[${n}]`);
        space();
        if (text[i] === ',') { i++; continue; }
        if (text[i++] !== ']') fail();
        break;
      }
    } else if (c === '"') {
      string();
    } else {
      const match = /^(-?[0-9][0-9.eE+-]*|true|false|null)/.exec(text.slice(i, i + 64));
      if (!match) fail();
      i += match[0].length;
    }
    spans.set(path, {start: from, end: i});
  };
  try {
    value('');
  } catch {
    // Broken JSON: the spans found so far still help.
  }
  return spans;
}

// The span of `path`, or of its nearest ancestor that the text has (a missing field is shown
// on the object that lacks it). Returns {span, exact} or null.
export function findPath(spans, path) {
  for (let p = path; ; ) {
    if (spans.has(p)) return {span: spans.get(p), exact: p === path};
    if (p === '') return null;
    const cut = Math.max(p.lastIndexOf('.'), p.lastIndexOf('['));
    p = cut > 0 ? p.slice(0, cut) : '';
  }
}

// Line (from 1) of an offset.
export function lineOf(text, offset) {
  let line = 1;
  for (let i = 0; i < offset && i < text.length; i++) if (text.charCodeAt(i) === 10) line++;
  return line;
}
