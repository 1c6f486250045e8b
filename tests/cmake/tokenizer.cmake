# Tokenizer and chat template tests (shard/tokenizer.c, shard/chat.c, daemon/cmd_tokenize.c).
set(_tok_dir ${CMAKE_CURRENT_SOURCE_DIR})

# Synthetic vocabularies: no model needed.
ts_add_unit_test(NAME test_tokenizer SOURCES ${_tok_dir}/unit/test_tokenizer.c
                 LIBS ts_text PkgConfig::JANSSON)
# The real Gemma 3 270M vocabulary against the Hugging Face fixtures; skips (77) without
# $TESSERA_MODEL_270M.
ts_add_unit_test(NAME test_tokenizer_model SOURCES ${_tok_dir}/unit/test_tokenizer.c
                 LIBS ts_text PkgConfig::JANSSON LABELS model ARGS --model)
if(TESSERA_MODEL_270M)
  set_tests_properties(test_tokenizer_model PROPERTIES
                       ENVIRONMENT "TESSERA_MODEL_270M=${TESSERA_MODEL_270M}")
endif()
ts_add_unit_test(NAME test_chat SOURCES ${_tok_dir}/unit/test_chat.c LIBS ts_text)

# CLI tests: `tessera tokenize` / `detokenize` (label cli; the ones that need the model skip
# with 77 without $TESSERA_MODEL_270M). The script is generated into the build tree.
if(TARGET tessera)
  set(_tok_cli ${CMAKE_CURRENT_BINARY_DIR}/tokenize_cli_test.sh)
  file(WRITE ${_tok_cli} [=[
#!/bin/sh
# usage: tokenize_cli_test.sh TESSERA CASE
T="$1"; CASE="$2"; M="${TESSERA_MODEL_270M:-}"
fail() { echo "FAIL: $*"; echo "0 passed, 1 failed"; exit 1; }
need_model() { if [ -z "$M" ] || [ ! -r "$M" ]; then echo "no TESSERA_MODEL_270M: skipped"; exit 77; fi; }
tmp=$(mktemp -d) || exit 1
trap 'rm -rf "$tmp"' EXIT
case "$CASE" in
usage)
  "$T" tokenize >/dev/null 2>&1; [ $? -eq 2 ] || fail "no -m: want exit 2"
  "$T" tokenize -m x --bogus >/dev/null 2>&1; [ $? -eq 2 ] || fail "--bogus: want exit 2"
  "$T" tokenize -m x a b >/dev/null 2>&1; [ $? -eq 2 ] || fail "two TEXTs: want exit 2"
  "$T" tokenize -m x --jsonl a >/dev/null 2>&1; [ $? -eq 2 ] || fail "--jsonl TEXT: want exit 2"
  "$T" detokenize -m x 1 zz >/dev/null 2>&1; [ $? -eq 2 ] || fail "bad id: want exit 2"
  "$T" detokenize --no-bos -m x >/dev/null 2>&1; [ $? -eq 2 ] || fail "detokenize --no-bos: want exit 2"
  "$T" tokenize --help | grep -q "usage: tessera tokenize" || fail "tokenize --help"
  "$T" detokenize --help | grep -q "usage: tessera detokenize" || fail "detokenize --help"
  "$T" tokenize -m /nonexistent/model.gguf hi >/dev/null 2>&1; [ $? -eq 1 ] || fail "missing model: want exit 1"
  echo "8 passed, 0 failed" ;;
text)
  need_model
  out=$("$T" tokenize -m "$M" "Who are you?") || fail "tokenize"
  [ "$out" = "[2,15938,659,611,236881]" ] || fail "got $out"
  out=$("$T" tokenize -m "$M" --no-bos "<start_of_turn>user") || fail "tokenize --no-bos"
  [ "$out" = "[105,2364]" ] || fail "got $out"
  out=$("$T" tokenize -m "$M" --no-bos --no-special "<eos>") || fail "tokenize --no-special"
  [ "$out" != "[1]" ] || fail "--no-special still parsed <eos>"
  out=$("$T" tokenize -m "$M" "") || fail "empty"
  [ "$out" = "[2]" ] || fail "empty: got $out"
  out=$("$T" detokenize -m "$M" 2 15938 659 611 236881) || fail "detokenize"
  [ "$out" = "Who are you?" ] || fail "detokenize got $out"
  "$T" detokenize -m "$M" 5 262144 >/dev/null 2>"$tmp/err"; [ $? -eq 1 ] || fail "out of range: want exit 1"
  grep -q "out of range" "$tmp/err" || fail "out-of-range message"
  printf 'a\377b' > "$tmp/bad"; "$T" tokenize -m "$M" < "$tmp/bad" >/dev/null 2>"$tmp/err"
  [ $? -eq 1 ] || fail "invalid UTF-8: want exit 1"
  grep -q "offset 1" "$tmp/err" || fail "invalid UTF-8 message: $(cat $tmp/err)"
  echo "7 passed, 0 failed" ;;
jsonl)
  need_model
  cat > "$tmp/in" <<'XEOF'
"Hello, world!"
"line1\nline2\ttab  two spaces"
"中文 العربية 👨‍👩‍👧"
""
"nul\u0000byte"
XEOF
  "$T" tokenize -m "$M" --jsonl < "$tmp/in" > "$tmp/ids" || fail "tokenize --jsonl"
  [ $(wc -l < "$tmp/ids") -eq 5 ] || fail "want 5 lines"
  "$T" detokenize -m "$M" --jsonl < "$tmp/ids" > "$tmp/out" || fail "detokenize --jsonl"
  cmp -s "$tmp/in" "$tmp/out" || { diff "$tmp/in" "$tmp/out"; fail "round trip differs"; }
  printf '"ok"\n[1,2]\n' | "$T" tokenize -m "$M" --jsonl >/dev/null 2>"$tmp/err"
  [ $? -eq 1 ] || fail "bad line: want exit 1"
  grep -q "line 2" "$tmp/err" || fail "bad line message: $(cat $tmp/err)"
  printf '[1,2]\n{"a":1}\n' | "$T" detokenize -m "$M" --jsonl >/dev/null 2>"$tmp/err"
  [ $? -eq 1 ] || fail "detokenize bad line: want exit 1"
  grep -q "line 2" "$tmp/err" || fail "detokenize bad line message"
  echo "4 passed, 0 failed" ;;
*) fail "unknown case $CASE" ;;
esac
]=])
  foreach(_c usage text jsonl)
    add_test(NAME cli_tokenize_${_c} COMMAND sh ${_tok_cli} $<TARGET_FILE:tessera> ${_c})
    set(_labels cli)
    if(NOT _c STREQUAL "usage")
      set(_labels "cli;model")
    endif()
    set_tests_properties(cli_tokenize_${_c} PROPERTIES LABELS "${_labels}" SKIP_RETURN_CODE 77 TIMEOUT 120)
    if(TESSERA_MODEL_270M)
      set_tests_properties(cli_tokenize_${_c} PROPERTIES ENVIRONMENT "TESSERA_MODEL_270M=${TESSERA_MODEL_270M}")
    endif()
  endforeach()
endif()

# Benchmark (not a test): encoding throughput over the corpus; see docs/benchmarks.md.
add_executable(bench_tokenizer ${_tok_dir}/bench/bench_tokenizer.c)
target_link_libraries(bench_tokenizer PRIVATE ts_text PkgConfig::JANSSON)
target_compile_definitions(bench_tokenizer PRIVATE TS_TEST_DATA="${TS_TEST_DATA}")
ts_c_target(bench_tokenizer)
