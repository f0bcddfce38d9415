//! How knowledge-base text becomes search terms: one tokeniser for English and Chinese (and
//! Japanese and Korean) text, and the two analyzers built on it.
//!
//! Chinese is written without spaces, so a whitespace tokeniser sees "如何查询转账状态" as one
//! word that no query ever equals. We cut CJK runs into overlapping *bigrams*, as Lucene's
//! `CJKAnalyzer` does: "如何查询转账状态" -> 如何 何查 查询 询转 转账 账状 状态, so the query "转账"
//! (one bigram) matches it, and "忘记密码" (忘记 记密 密码) matches "忘记密码怎么办" on all three.
//! We chose bigrams over a dictionary segmenter (jieba) because:
//! - recall does not depend on a dictionary: a segmenter cuts a word it does not know (wallet
//!   jargon such as 助记词, 提币, 矿工费) differently in a query than in an article, and the
//!   article is then never found; every bigram of a query occurs in any article containing it;
//! - it needs no 5 MB dictionary in the binary and no load time, and behaves the same on every
//!   node and version;
//! - what it costs (some extra, meaningless bigrams such as 询转 that rarely occur in queries, and
//!   a larger index) is small for a knowledge base of hundreds or thousands of articles, and
//!   BM25 ranks the articles matching more of a query's bigrams first.
//!
//! A CJK character standing alone (between punctuation or Latin text) is kept as a unigram, as in
//! Lucene. A one-character query therefore only finds such lone characters: visitors type
//! phrases, and one ideograph alone is too ambiguous to search on anyway.
//!
//! Runs of other letters and digits are words. Then: lower case, ASCII folding (so "Café" and
//! full-width "ＵＳＤＴ" match "cafe" and "usdt"), and words over [`MAX_TOKEN_BYTES`] dropped.
//! The English analyzer also drops English stop words and stems ("transfers" -> "transfer"); it is
//! used for articles in English and Chinese (Chinese articles are full of English words: App,
//! USDT). Articles in other languages use the plain analyzer, because an English stemmer would
//! mangle their words.

use tantivy::tokenizer::{
    AsciiFoldingFilter, Language, LowerCaser, RemoveLongFilter, Stemmer, StopWordFilter,
    TextAnalyzer, Token, TokenStream, Tokenizer,
};

/// The name under which the English (and Chinese) analyzer is registered with the index.
pub const ENGLISH: &str = "parley_en";
/// The name of the analyzer for other languages: no stop words, no stemming.
pub const PLAIN: &str = "parley_plain";

/// Longer "words" are noise (hashes, pasted addresses, a key held down) and are not indexed.
pub const MAX_TOKEN_BYTES: usize = 64;

/// Splits text into words and CJK bigrams; see the module documentation.
#[derive(Clone, Default)]
pub struct CjkBigramTokenizer {
    tokens: Vec<Token>,
}

/// Hiragana, Katakana, Hangul syllables and the Han ideographs (with their extensions and
/// compatibility forms): the scripts written without spaces between words.
pub fn is_cjk(c: char) -> bool {
    matches!(c as u32,
        0x3040..=0x30FF     // Hiragana, Katakana
        | 0x31F0..=0x31FF   // Katakana phonetic extensions
        | 0x3400..=0x4DBF   // CJK extension A
        | 0x4E00..=0x9FFF   // CJK unified ideographs
        | 0xAC00..=0xD7AF   // Hangul syllables
        | 0xF900..=0xFAFF   // CJK compatibility ideographs
        | 0x20000..=0x2FFFF // CJK extensions B and later
    )
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Class {
    Cjk,
    Word,
    Other,
}

fn class(c: char) -> Class {
    if is_cjk(c) {
        Class::Cjk
    } else if c.is_alphanumeric() {
        Class::Word
    } else {
        Class::Other
    }
}

fn push(tokens: &mut Vec<Token>, text: &str, from: usize, to: usize) {
    let position = tokens.len();
    tokens.push(Token {
        offset_from: from,
        offset_to: to,
        position,
        text: text[from..to].to_string(),
        position_length: 1,
    });
}

/// Emits the tokens of one run of characters of the same class.
fn flush_run(tokens: &mut Vec<Token>, text: &str, kind: Class, run: &[(usize, char)]) {
    let (Some(first), Some(last)) = (run.first(), run.last()) else {
        return;
    };
    let end = last.0 + last.1.len_utf8();
    match kind {
        Class::Other => {}
        Class::Word => push(tokens, text, first.0, end),
        Class::Cjk if run.len() == 1 => push(tokens, text, first.0, end),
        Class::Cjk => {
            for pair in run.windows(2) {
                push(tokens, text, pair[0].0, pair[1].0 + pair[1].1.len_utf8());
            }
        }
    }
}

impl Tokenizer for CjkBigramTokenizer {
    type TokenStream<'a> = VecTokenStream<'a>;

    fn token_stream<'a>(&'a mut self, text: &'a str) -> VecTokenStream<'a> {
        self.tokens.clear();
        let mut run: Vec<(usize, char)> = Vec::new();
        let mut kind = Class::Other;
        for (at, c) in text.char_indices() {
            let k = class(c);
            if k != kind {
                flush_run(&mut self.tokens, text, kind, &run);
                run.clear();
                kind = k;
            }
            run.push((at, c));
        }
        flush_run(&mut self.tokens, text, kind, &run);
        VecTokenStream {
            tokens: &mut self.tokens,
            next: 0,
        }
    }
}

/// The tokens of one text, computed up front (texts are bounded: a body is at most 20,000
/// characters).
pub struct VecTokenStream<'a> {
    tokens: &'a mut Vec<Token>,
    next: usize,
}

impl TokenStream for VecTokenStream<'_> {
    fn advance(&mut self) -> bool {
        self.next += 1;
        self.next <= self.tokens.len()
    }

    fn token(&self) -> &Token {
        &self.tokens[self.next - 1]
    }

    fn token_mut(&mut self) -> &mut Token {
        &mut self.tokens[self.next - 1]
    }
}

/// Words and bigrams, lower-cased and folded, with English stop words removed and English
/// stemming.
pub fn english() -> TextAnalyzer {
    TextAnalyzer::builder(CjkBigramTokenizer::default())
        .filter(RemoveLongFilter::limit(MAX_TOKEN_BYTES))
        .filter(LowerCaser)
        .filter(AsciiFoldingFilter)
        .filter(StopWordFilter::new(Language::English).expect("tantivy ships English stop words"))
        .filter(Stemmer::new(Language::English))
        .build()
}

/// Words and bigrams, lower-cased and folded: for languages we do not stem.
pub fn plain() -> TextAnalyzer {
    TextAnalyzer::builder(CjkBigramTokenizer::default())
        .filter(RemoveLongFilter::limit(MAX_TOKEN_BYTES))
        .filter(LowerCaser)
        .filter(AsciiFoldingFilter)
        .build()
}

/// The terms `analyzer` makes of `text`, in order, duplicates included.
pub fn terms(analyzer: &mut TextAnalyzer, text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut stream = analyzer.token_stream(text);
    while stream.advance() {
        out.push(stream.token().text.clone());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn en(text: &str) -> Vec<String> {
        terms(&mut english(), text)
    }

    #[test]
    fn chinese_is_cut_into_overlapping_bigrams() {
        assert_eq!(
            en("如何查询转账状态"),
            ["如何", "何查", "查询", "询转", "转账", "账状", "状态"]
        );
        assert_eq!(en("忘记密码"), ["忘记", "记密", "密码"]);
    }

    #[test]
    fn every_bigram_of_a_query_occurs_in_a_text_that_contains_it() {
        let article = en("忘记密码怎么办");
        for term in en("忘记密码") {
            assert!(article.contains(&term), "{term}");
        }
        assert!(en("如何查询转账状态").contains(&"转账".to_string()));
    }

    #[test]
    fn punctuation_splits_runs_and_a_lone_character_is_a_unigram() {
        assert_eq!(en("转账，没到账？币"), ["转账", "没到", "到账", "币"]);
    }

    #[test]
    fn mixed_chinese_latin_and_digits_split_by_script() {
        assert_eq!(en("USDT转账100元"), ["usdt", "转账", "100", "元"]);
        // Full-width letters, as Chinese input methods type them, fold to ASCII.
        assert_eq!(en("ＵＳＤＴ"), ["usdt"]);
    }

    #[test]
    fn english_is_stemmed_and_stop_words_dropped() {
        assert_eq!(en("The transfers are pending"), ["transfer", "pend"]);
        assert_eq!(en("Transfer pended"), ["transfer", "pend"]);
    }

    #[test]
    fn the_plain_analyzer_neither_stems_nor_drops_words() {
        assert_eq!(
            terms(&mut plain(), "Les virements sont à l'étude"),
            ["les", "virements", "sont", "a", "l", "etude"]
        );
    }

    #[test]
    fn query_syntax_is_only_words() {
        assert_eq!(
            en(r#"title:"refund" AND -fee* (OR) body:[a TO z]"#),
            ["titl", "refund", "fee", "bodi", "z"]
        );
        assert!(en(r#""" :: () * -"#).is_empty());
    }

    #[test]
    fn japanese_and_korean_are_bigrams_too() {
        assert_eq!(en("パスワード"), ["パス", "スワ", "ワー", "ード"]);
        assert_eq!(en("비밀번호"), ["비밀", "밀번", "번호"]);
    }

    #[test]
    fn overlong_words_are_dropped() {
        let address = "0x".to_string() + &"ab".repeat(40);
        assert_eq!(en(&format!("send to {address} now")), ["send", "now"]);
    }
}
