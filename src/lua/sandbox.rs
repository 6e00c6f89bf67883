//! The sandbox a script runs in, and the guards that keep its budget whole.
//!
//! Gone: `dofile`, `loadfile`, `collectgarbage`, `string.dump`, the parts of `os` that touch
//! files, processes or the environment, and finalizers (`setmetatable` refuses a `__gc`: a
//! finalizer runs when reef drops the VM, where no budget is left to stop it). `load` takes
//! text only. `print` writes to stderr with the line that printed, up to [`PRINT_LIMIT`].
//!
//! The budget hook raises once the instructions or the time are spent, and from then on at
//! every line, so code that caught the error dies at its next one. What catches errors —
//! `pcall`, `xpcall` (whose handler is skipped), `coroutine.resume` and `coroutine.close` —
//! re-raises budget and memory errors instead of returning them; `print` lets a `__tostring`
//! error through. So `while true do pcall(f) end` ends with the budget.
//!
//! Some C runs where the hook cannot reach. Pattern matching backtracks: [`match_steps`]
//! bounds the steps a match could take and patterns past [`PATTERN_STEPS`] are refused with
//! file and line. C loops whose length the script picks are counted against the instruction
//! budget before they run (`table.move`, the moves of `table.insert` and `table.remove`) or
//! answered directly (`string.rep` of nothing). The evaluator's child process is the backstop.

use mlua::{Lua, MultiValue, Table, Value};

use super::error::MEMORY_MESSAGE;
use super::{ScriptError, ScriptErrorKind, caller_location, state};

/// The most steps a single pattern match may take at worst: about a quarter of a second of C.
pub(super) const PATTERN_STEPS: f64 = 1e8;

/// The most bytes `print` writes for one evaluation (or one run of a hook): a script cannot
/// flood reef's output.
pub(super) const PRINT_LIMIT: usize = 64 << 10;

/// The name of the sandbox's chunk. An error placed there (a C function's argument error, raised
/// from a wrapper) is placed where the script was instead.
pub(super) const SANDBOX_CHUNK: &str = "sandbox";

/// The sandbox in Lua; it receives the Rust helpers below as its arguments.
const SANDBOX: &str = r##"
local emit, settle, fatal, guard, charge, has_len = ...
local select, type, tostring, tonumber, error, rawget = select, type, tostring, tonumber, error, rawget
local pack, concat, tointeger = table.pack, table.concat, math.tointeger
-- Each wrapper calls the original through a local of the same name, so that the original's
-- argument errors name it as the script knows it ("bad argument #1 to 'insert'").

_ENV.print = function(...)
  local words = pack(...)
  for i = 1, words.n do words[i] = tostring(words[i]) end
  emit(concat(words, "\t", 1, words.n))
end

local pcall, xpcall = pcall, xpcall
_ENV.pcall = function(...) return settle(pcall(...)) end
_ENV.xpcall = function(f, handler, ...)
  if type(handler) ~= "function" then return settle(xpcall(f, handler, ...)) end
  return settle(xpcall(f, function(e)
    if fatal(e) then return e end
    return handler(e)
  end, ...))
end
local resume, close = coroutine.resume, coroutine.close
coroutine.resume = function(co, ...) return settle(resume(co, ...)) end
coroutine.close = function(co) return settle(close(co)) end

local setmetatable = setmetatable
_ENV.setmetatable = function(t, meta)
  if type(meta) == "table" and rawget(meta, "__gc") ~= nil then
    error("setmetatable: __gc finalizers are not available to reef scripts (they would run "
      .. "when reef drops the script, out of its budget); release things explicitly", 2)
  end
  return setmetatable(t, meta)
end

local load = load
_ENV.load = function(chunk, name, _, ...)
  if select("#", ...) > 0 then return load(chunk, name, "t", ...) end
  return load(chunk, name, "t")
end

-- The wrappers that scripts call in loops fit on one line: the line hook runs once per call.
local find, match, gmatch, gsub = string.find, string.match, string.gmatch, string.gsub
string.find = function(s, p, init, plain) guard("find", s, p, init, plain) return find(s, p, init, plain) end
string.match = function(s, p, init) guard("match", s, p, init) return match(s, p, init) end
string.gmatch = function(s, p, init) guard("gmatch", s, p, init) return gmatch(s, p, init) end
string.gsub = function(s, p, r, n) guard("gsub", s, p) return gsub(s, p, r, n) end

-- Nothing repeated is nothing, however often: C would loop that many times to say so.
local rep = string.rep
string.rep = function(s, n, sep) if s == "" and (sep == nil or sep == "") and type(n) == "number" and n > 1 then n = 1 end return rep(s, n, sep) end

local move = table.move
local function charge_move(f, e)
  local first, last = tonumber(f), tonumber(e)
  if first and last and last >= first then charge(last - first + 1.0) end
end
table.move = function(a1, f, e, t, a2) charge_move(f, e) return move(a1, f, e, t, a2) end

-- table.insert and table.remove shift elements in C, as many as the length says. A plain
-- table's length is charged first; a length from __len could differ on the next call, so
-- such tables are shifted here in Lua, where the hook sees every step.
local insert, remove = table.insert, table.remove
local function position(value, fname)
  local p = tointeger(value)
  if p == nil then
    error(("bad argument #2 to '%s' (number has no integer representation)"):format(fname), 4)
  end
  return p
end
local function insert_at(t, pos, value)
  local e = #t + 1
  if has_len(t) then
    local p = position(pos, "insert")
    if p < 1 or p > e then error("bad argument #2 to 'insert' (position out of bounds)", 3) end
    for i = e, p + 1, -1 do t[i] = t[i - 1] end
    t[p] = value
    return true
  end
  local p = tonumber(pos)
  if p and e - p > 0 then charge(e - p + 0.0) end
end
table.insert = function(t, ...) if select("#", ...) == 2 and type(t) == "table" and insert_at(t, ...) then return end return insert(t, ...) end
local function remove_from(t, pos)
  local size = #t
  local p = size
  if pos ~= nil then p = tonumber(pos) end
  if has_len(t) then
    if p ~= size then
      p = position(p or pos, "remove")
      if p < 1 or p > size + 1 then
        error("bad argument #2 to 'remove' (position out of bounds)", 3)
      end
    end
    local value = t[p]
    for i = p, size - 1 do t[i] = t[i + 1] end
    t[p < size and size or p] = nil
    return true, value
  end
  if p and size - p > 0 then charge(size - p + 0.0) end
  return false
end
table.remove = function(t, ...)
  if type(t) == "table" then
    local done, value = remove_from(t, (...))
    if done then return value end
  end
  return remove(t, ...)
end
"##;

/// Removes what a topology script has no business with and installs the guards.
pub(super) fn install(lua: &Lua) -> mlua::Result<()> {
    let globals = lua.globals();
    for name in ["dofile", "loadfile", "collectgarbage"] {
        globals.raw_set(name, mlua::Nil)?;
    }
    let os: Table = globals.get("os")?;
    for name in [
        "execute",
        "exit",
        "remove",
        "rename",
        "tmpname",
        "getenv",
        "setlocale",
    ] {
        os.raw_set(name, mlua::Nil)?;
    }
    // Bytecode cannot be loaded anyway; nothing to make it for.
    globals.get::<Table>("string")?.raw_set("dump", mlua::Nil)?;
    lua.load(SANDBOX)
        .set_name(format!("={SANDBOX_CHUNK}"))
        .call::<()>((
            lua.create_function(emit)?,
            lua.create_function(settle)?,
            lua.create_function(|lua, error: Value| Ok(fatal(lua, &error).is_some()))?,
            lua.create_function(guard)?,
            lua.create_function(charge)?,
            lua.create_function(|_, table: Table| {
                Ok(table
                    .metatable()
                    .is_some_and(|meta| meta.raw_get::<Value>("__len").is_ok_and(|v| !v.is_nil())))
            })?,
        ))
}

/// `print`'s output: stderr, with the line that printed (`print` would otherwise write into
/// reef's own output and break `--json`), at most [`PRINT_LIMIT`] bytes per budget.
fn emit(lua: &Lua, text: mlua::LuaString) -> mlua::Result<()> {
    // 1 is `print` itself (in the sandbox chunk), 2 the script.
    let at = caller_location(lua, 2)
        .map(|l| l.to_string())
        .unwrap_or_default();
    let text = text.as_bytes();
    let shown = {
        let mut state = state(lua);
        // A new budget (a hook's run) gets a new allowance.
        let window = state.budget.started;
        if state.printed.0 != window {
            state.printed = (window, 0);
        }
        let left = PRINT_LIMIT.saturating_sub(state.printed.1);
        if left == 0 {
            return Ok(());
        }
        let shown = text.len().min(left);
        state.printed.1 = if shown < text.len() {
            PRINT_LIMIT
        } else {
            state.printed.1 + shown + 1
        };
        shown
    };
    use std::io::Write;
    let mut stderr = crate::progress::Stderr;
    let _ = writeln!(stderr, "{at}: {}", String::from_utf8_lossy(&text[..shown]));
    if shown < text.len() {
        let _ = writeln!(
            stderr,
            "{at}: print: the script printed more than {} KiB; the rest of its output is dropped",
            PRINT_LIMIT >> 10
        );
    }
    Ok(())
}

/// Passes on what `pcall` and its kin returned, unless the budget is spent or the error caught
/// is a budget or memory error: then that error goes on up.
fn settle(lua: &Lua, results: MultiValue) -> mlua::Result<MultiValue> {
    if let (Some(Value::Boolean(false)), Some(error)) = (results.front(), results.get(1))
        && let Some(fatal) = fatal(lua, error)
    {
        return Err(fatal);
    }
    let state = state(lua);
    if state.budget.overrun() {
        return Err(mlua::Error::external(state.budget.over_budget()));
    }
    Ok(results)
}

/// The error to raise again if `error` (a caught error value) is one no script may catch:
/// the budget's, or running out of memory; also any error once the budget is spent.
fn fatal(lua: &Lua, error: &Value) -> Option<mlua::Error> {
    let state = state(lua);
    let near = state.budget.last_location.clone();
    match error {
        Value::Error(err) => {
            let kind = ScriptError::from_lua(err, None).kind;
            if matches!(kind, ScriptErrorKind::Budget | ScriptErrorKind::Memory) {
                return Some((**err).clone());
            }
        }
        Value::String(text) if text.as_bytes() == MEMORY_MESSAGE.as_bytes() => {
            return Some(mlua::Error::external(ScriptError::out_of_memory(near)));
        }
        _ => {}
    }
    state
        .budget
        .overrun()
        .then(|| mlua::Error::external(state.budget.over_budget()))
}

/// Counts `work` done in C on the script's behalf against its instruction budget.
fn charge(lua: &Lua, work: f64) -> mlua::Result<()> {
    // `as` saturates: a count past u64 is simply "too much".
    let work = if work.is_nan() { 0 } else { work as u64 };
    state(lua)
        .budget
        .charge(work)
        .map_err(mlua::Error::external)
}

/// Refuses a pattern match that could run past [`PATTERN_STEPS`] (or what is left of the
/// budget) before C returns.
fn guard(
    lua: &Lua,
    (function, subject, pattern, init, plain): (String, Value, Value, Value, Value),
) -> mlua::Result<()> {
    let (Value::String(subject), Value::String(pattern)) = (&subject, &pattern) else {
        // Numbers are short; anything else is C's own argument error.
        return Ok(());
    };
    let length = subject.as_bytes().len();
    let start = match init {
        Value::Integer(init) => init,
        Value::Number(init) => init as i64,
        _ => 1,
    };
    let searched = match start {
        start if start > 0 => length.saturating_sub((start - 1) as usize),
        0 => length,
        start => length.min(start.unsigned_abs() as usize),
    };
    let search = match function.as_str() {
        "find" if plain.as_boolean() != Some(false) && !plain.is_nil() => Search::Plain,
        "gmatch" => Search::Unanchorable,
        _ => Search::Pattern,
    };
    let pattern = pattern.as_bytes().to_vec();
    let steps = match_steps(&pattern, searched, search);
    let allowance = PATTERN_STEPS.min(state(lua).budget.remaining() as f64);
    if steps <= allowance {
        return Ok(());
    }
    let location = caller_location(lua, 2).or_else(|| state(lua).budget.last_location.clone());
    let shown: String = String::from_utf8_lossy(&pattern).chars().take(40).collect();
    Err(mlua::Error::external(ScriptError::at(
        ScriptErrorKind::Runtime,
        location,
        format!(
            "string.{function}: matching the pattern {shown:?} over {searched} bytes could take \
             about {steps:.1e} steps in C, where the script's budget cannot stop it (at most \
             {allowance:.0e}): its repetitions (*, +, - and ?) can backtrack over each other. \
             Anchor the pattern (^...$), match shorter strings (e.g. line by line with \
             s:gmatch(\"[^\\n]+\")), or use fewer repetitions"
        ),
    )))
}

/// How a pattern is used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Search {
    /// `find`, `match`, `gsub`: a leading `^` anchors.
    Pattern,
    /// `gmatch`: a leading `^` is a plain character.
    Unanchorable,
    /// `find` with `plain`: a substring search.
    Plain,
}

/// The most steps Lua's matcher could take for `pattern` over `subject` bytes, whatever the
/// bytes: every start position, each attempt backtracking through every repetition that
/// could give back a byte the rest of the pattern could take. A repetition the rest cannot
/// overlap (`%s*=`) adds instead of multiplying, and one the rest always follows (`%s+` at the
/// end) is paid for by the bytes it consumes.
pub(super) fn match_steps(pattern: &[u8], subject: usize, search: Search) -> f64 {
    let n = subject as f64;
    if search == Search::Plain {
        return (n + 1.0) * (pattern.len() as f64 + 1.0);
    }
    let (anchored, body) = match pattern.split_first() {
        Some((b'^', body)) if search == Search::Pattern => (true, body),
        _ => (false, pattern),
    };
    let whole = parse(body)
        .iter()
        .rev()
        .fold(Suffix::END, |rest, item| rest.after(item, n));
    let attempt = whole.fail + whole.extra;
    if anchored {
        attempt + n
    } else {
        (n + 1.0) * attempt + n
    }
}

/// A set of bytes, as a pattern's character class matches them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct ByteSet([u64; 4]);

impl ByteSet {
    const EMPTY: ByteSet = ByteSet([0; 4]);
    const ALL: ByteSet = ByteSet([u64::MAX; 4]);

    fn matching(test: impl Fn(u8) -> bool) -> ByteSet {
        let mut set = ByteSet::EMPTY;
        for byte in 0..=u8::MAX {
            if test(byte) {
                set.insert(byte);
            }
        }
        set
    }

    fn single(byte: u8) -> ByteSet {
        let mut set = ByteSet::EMPTY;
        set.insert(byte);
        set
    }

    fn insert(&mut self, byte: u8) {
        self.0[usize::from(byte >> 6)] |= 1 << (byte & 63);
    }

    fn union(self, other: ByteSet) -> ByteSet {
        ByteSet(std::array::from_fn(|i| self.0[i] | other.0[i]))
    }

    fn complement(self) -> ByteSet {
        ByteSet(self.0.map(|word| !word))
    }

    fn intersects(self, other: ByteSet) -> bool {
        self.0.iter().zip(other.0).any(|(a, b)| a & b != 0)
    }
}

/// `%a`, `%d`, ... as Lua's `match_class` reads them in the C locale; other bytes stand for
/// themselves.
fn class_set(class: u8) -> ByteSet {
    let test: fn(u8) -> bool = match class.to_ascii_lowercase() {
        b'a' => |c| c.is_ascii_alphabetic(),
        b'c' => |c| c.is_ascii_control(),
        b'd' => |c| c.is_ascii_digit(),
        b'g' => |c| c.is_ascii_graphic(),
        b'l' => |c| c.is_ascii_lowercase(),
        b'p' => |c| c.is_ascii_punctuation(),
        b's' => |c| matches!(c, b' ' | b'\t'..=b'\r'),
        b'u' => |c| c.is_ascii_uppercase(),
        b'w' => |c| c.is_ascii_alphanumeric(),
        b'x' => |c| c.is_ascii_hexdigit(),
        b'z' => |c| c == 0,
        _ => return ByteSet::single(class),
    };
    let set = ByteSet::matching(test);
    if class.is_ascii_lowercase() {
        set
    } else {
        set.complement()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Quantifier {
    /// `?`
    Optional,
    /// `*`
    Greedy,
    /// `+`
    AtLeastOnce,
    /// `-`
    Lazy,
}

/// One element of a pattern, as far as its cost goes (captures cost nothing).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Item {
    Class(ByteSet, Option<Quantifier>),
    /// `$` at the very end.
    End,
    /// `%bxy`
    Balance(u8),
    /// `%f[set]`
    Frontier,
    /// `%1`..`%9`
    BackReference,
}

/// Splits a pattern (without its anchor) into items, as Lua's `match` walks it. A malformed
/// tail becomes one class: Lua raises when it gets there.
fn parse(pattern: &[u8]) -> Vec<Item> {
    let mut items = Vec::new();
    let mut i = 0;
    while i < pattern.len() {
        match pattern[i] {
            b'(' if pattern.get(i + 1) == Some(&b')') => i += 2,
            b'(' | b')' => i += 1,
            b'$' if i + 1 == pattern.len() => {
                items.push(Item::End);
                i += 1;
            }
            b'%' if pattern.get(i + 1) == Some(&b'b') => {
                let Some(&open) = pattern.get(i + 2).filter(|_| i + 3 < pattern.len()) else {
                    items.push(Item::Class(ByteSet::ALL, None));
                    break;
                };
                items.push(Item::Balance(open));
                i += 4;
            }
            b'%' if pattern.get(i + 1) == Some(&b'f') => {
                match (pattern.get(i + 2), class_end(pattern, i + 2)) {
                    (Some(b'['), Some(end)) => {
                        items.push(Item::Frontier);
                        i = end;
                    }
                    _ => {
                        items.push(Item::Class(ByteSet::ALL, None));
                        break;
                    }
                }
            }
            b'%' if pattern.get(i + 1).is_some_and(u8::is_ascii_digit) => {
                items.push(Item::BackReference);
                i += 2;
            }
            _ => {
                let Some((set, end)) = single_class(pattern, i) else {
                    items.push(Item::Class(ByteSet::ALL, None));
                    break;
                };
                let quantifier = match pattern.get(end) {
                    Some(b'?') => Some(Quantifier::Optional),
                    Some(b'*') => Some(Quantifier::Greedy),
                    Some(b'+') => Some(Quantifier::AtLeastOnce),
                    Some(b'-') => Some(Quantifier::Lazy),
                    _ => None,
                };
                items.push(Item::Class(set, quantifier));
                i = end + usize::from(quantifier.is_some());
            }
        }
    }
    items
}

/// The class starting at `i` and the index just past it.
fn single_class(pattern: &[u8], i: usize) -> Option<(ByteSet, usize)> {
    match pattern[i] {
        b'%' => Some((class_set(*pattern.get(i + 1)?), i + 2)),
        b'[' => {
            let end = class_end(pattern, i)?;
            Some((bracket_set(pattern, i, end - 1), end))
        }
        b'.' => Some((ByteSet::ALL, i + 1)),
        byte => Some((ByteSet::single(byte), i + 1)),
    }
}

/// Past the `]` closing the set that opens at `open` (Lua's `classend`); `None` if malformed.
fn class_end(pattern: &[u8], open: usize) -> Option<usize> {
    let mut j = open + 1;
    if pattern.get(j) == Some(&b'^') {
        j += 1;
    }
    loop {
        let byte = *pattern.get(j)?;
        j += 1;
        if byte == b'%' && j < pattern.len() {
            j += 1;
        }
        if *pattern.get(j)? == b']' {
            return Some(j + 1);
        }
    }
}

/// The bytes `[...]` matches, from `open` (the `[`) to `close` (the `]`), as Lua's
/// `matchbracketclass` reads it.
fn bracket_set(pattern: &[u8], open: usize, close: usize) -> ByteSet {
    let mut k = open;
    let negated = pattern.get(open + 1) == Some(&b'^');
    if negated {
        k += 1;
    }
    let mut set = ByteSet::EMPTY;
    k += 1;
    while k < close {
        if pattern[k] == b'%' {
            k += 1;
            set = set.union(class_set(pattern[k]));
        } else if pattern.get(k + 1) == Some(&b'-') && k + 2 < close {
            let (low, high) = (pattern[k], pattern[k + 2]);
            set = set.union(ByteSet::matching(|c| low <= c && c <= high));
            k += 2;
        } else {
            set.insert(pattern[k]);
        }
        k += 1;
    }
    if negated { set.complement() } else { set }
}

/// What the rest of a pattern, from some item on, costs and admits.
#[derive(Debug, Clone, Copy)]
struct Suffix {
    /// The most steps an attempt that fails can take.
    fail: f64,
    /// The most steps an attempt that succeeds can take beyond the bytes it consumes.
    extra: f64,
    /// Bytes a match of it can begin with.
    first: ByteSet,
    /// It can match without consuming anything (elsewhere than at the end).
    nullable: bool,
    /// It never fails.
    total: bool,
    /// It always matches at the end of the subject.
    at_end: bool,
}

impl Suffix {
    const END: Suffix = Suffix {
        fail: 0.0,
        extra: 0.0,
        first: ByteSet::EMPTY,
        nullable: true,
        total: true,
        at_end: true,
    };

    /// `item` followed by `self`, over `n` bytes.
    fn after(self, item: &Item, n: f64) -> Suffix {
        let rest = self;
        match *item {
            Item::End => Suffix {
                fail: 1.0,
                extra: 1.0,
                first: ByteSet::EMPTY,
                nullable: false,
                total: false,
                at_end: true,
            },
            Item::Balance(open) => Suffix {
                fail: n + rest.fail,
                extra: 1.0 + rest.extra,
                first: ByteSet::single(open),
                nullable: false,
                total: false,
                at_end: false,
            },
            Item::Frontier => Suffix {
                fail: 1.0 + rest.fail,
                extra: 1.0 + rest.extra,
                total: false,
                at_end: false,
                ..rest
            },
            Item::BackReference => Suffix {
                fail: n + rest.fail,
                extra: 1.0 + rest.extra,
                first: ByteSet::ALL,
                nullable: true,
                total: false,
                at_end: false,
            },
            Item::Class(set, None) => Suffix {
                fail: 1.0 + rest.fail,
                extra: 1.0 + rest.extra,
                first: set,
                nullable: false,
                total: false,
                at_end: false,
            },
            Item::Class(set, Some(quantifier)) => rest.repeated(set, quantifier, n),
        }
    }

    /// A repetition of `set` followed by `self`. Backtracking multiplies only when the rest
    /// could start inside the run (its first bytes overlap the set, or it can match empty);
    /// otherwise every give-back but the last fails at once.
    fn repeated(self, set: ByteSet, quantifier: Quantifier, n: f64) -> Suffix {
        let rest = self;
        let separate = !set.intersects(rest.first) && !rest.nullable;
        let first = match quantifier {
            Quantifier::AtLeastOnce => set,
            _ => set.union(rest.first),
        };
        if quantifier == Quantifier::Optional {
            let (fail, extra) = if rest.total {
                (0.0, 1.0 + rest.extra)
            } else if separate {
                (rest.fail + 2.0, 1.0 + rest.extra)
            } else {
                (2.0 * rest.fail + 1.0, 1.0 + rest.fail + rest.extra)
            };
            return Suffix {
                fail,
                extra,
                first,
                ..rest
            };
        }
        let plus = quantifier == Quantifier::AtLeastOnce;
        let greedy = quantifier != Quantifier::Lazy;
        // `.*` then something that matches at the end: the first try, at the end, succeeds.
        let runs_out = set == ByteSet::ALL && rest.at_end;
        let total = !plus && (rest.total || runs_out);
        let (fail, extra) = if rest.total || (greedy && runs_out) {
            (1.0, 1.0 + rest.extra)
        } else if separate {
            (2.0 * n + rest.fail, 2.0 + rest.extra)
        } else {
            (n + (n + 1.0) * rest.fail, n + n * rest.fail + rest.extra)
        };
        Suffix {
            fail: if total { 0.0 } else { fail },
            extra,
            first,
            nullable: !plus && rest.nullable,
            total,
            at_end: !plus && rest.at_end,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn steps(pattern: &str, subject: usize) -> f64 {
        match_steps(pattern.as_bytes(), subject, Search::Pattern)
    }

    #[test]
    fn classes_read_like_lua() {
        let items = parse(b"[%a_][^%s]%d.");
        let sets: Vec<ByteSet> = items
            .iter()
            .map(|item| match item {
                Item::Class(set, None) => *set,
                other => panic!("{other:?}"),
            })
            .collect();
        assert!(sets[0].intersects(ByteSet::single(b'_')));
        assert!(sets[0].intersects(ByteSet::single(b'Q')));
        assert!(!sets[0].intersects(ByteSet::single(b'1')));
        assert!(!sets[1].intersects(ByteSet::single(b'\n')));
        assert!(sets[1].intersects(ByteSet::single(b'x')));
        assert_eq!(sets[2], ByteSet::matching(|c| c.is_ascii_digit()));
        assert_eq!(sets[3], ByteSet::ALL);
        assert_eq!(
            parse(b"%b()%f[%w]%1x$"),
            [
                Item::Balance(b'('),
                Item::Frontier,
                Item::BackReference,
                Item::Class(ByteSet::single(b'x'), None),
                Item::End
            ]
        );
        // A malformed tail is left to Lua's own error.
        assert_eq!(parse(b"[a").len(), 1);
        assert_eq!(parse(b"a%").len(), 2);
    }

    #[test]
    fn everyday_patterns_pass_over_large_strings() {
        let mib = 1 << 20;
        for (pattern, subject) in [
            ("%s+", mib),
            ("[^\n]+", mib),
            ("{config}", mib),
            ("read%-only", mib),
            ("version (%d+)", mib),
            ("^%s*(.-)%s*$", 4096),
            ("^(%w+)%s*=%s*(.*)$", mib),
            ("^[%w_-]+$", mib),
            ("(%d+)%.(%d+)", 4096),
            ("^(.-)=(.*)$", mib),
        ] {
            let cost = steps(pattern, subject);
            assert!(
                cost <= PATTERN_STEPS,
                "{pattern:?} over {subject}: {cost:e}"
            );
        }
        assert!(match_steps(b"[^,]+", 1 << 20, Search::Unanchorable) <= PATTERN_STEPS);
    }

    #[test]
    fn backtracking_patterns_are_costed_past_the_limit() {
        let optional = format!("{}{}", "a?".repeat(40), "a".repeat(40));
        for (pattern, subject) in [
            (optional.as_str(), 40),
            ("a*b", 31_000),
            ("(.*)(.*)(.*)x", 2000),
            ("^a*a*a*b", 1000),
            ("%s*=%s*", 1 << 20),
        ] {
            let cost = steps(pattern, subject);
            assert!(cost > PATTERN_STEPS, "{pattern:?} over {subject}: {cost:e}");
        }
        assert!(match_steps(&[b'a'; 5000], 1 << 20, Search::Plain) > PATTERN_STEPS);
    }

    #[test]
    fn an_anchor_bounds_the_start_positions() {
        assert!(steps("^a*b", 31_000) < steps("a*b", 31_000) / 1000.0);
        // gmatch has no anchor: `^` is a character there.
        assert!(
            match_steps(b"^a*b", 31_000, Search::Unanchorable)
                > match_steps(b"^a*b", 31_000, Search::Pattern)
        );
    }
}
