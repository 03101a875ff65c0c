// dom: the small helpers every part of the chat page draws with. User text
// only ever reaches the page through textContent.

export const $ = (id) => document.getElementById(id);

/** h makes an element with a class and a text. */
export function h(tag, cls, text) {
  const e = document.createElement(tag);
  if (cls) e.className = cls;
  if (text !== undefined && text !== null) e.textContent = String(text);
  return e;
}

/** hue is a name's own colour, the same on every page. */
export function hue(name) {
  let x = 0;
  for (let i = 0; i < name.length; i++) x = (x * 31 + name.charCodeAt(i)) >>> 0;
  return x % 360;
}

/** paintAvatar draws a person (kind 'dm'), a room or a group. */
export function paintAvatar(el, name, kind) {
  el.textContent = kind === 'room' ? '#' : (name || '?').slice(0, 1);
  el.classList.toggle('room', kind === 'room');
  el.classList.toggle('group', kind === 'group');
  el.style.background = `hsl(${hue(name || '?')} 55% ${kind === 'dm' ? 48 : 42}%)`;
}

export function clock(ts) {
  return new Date(ts).toLocaleTimeString([], { hour: '2-digit', minute: '2-digit' });
}
