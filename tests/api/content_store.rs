//! What every [`ContentStore`] must do, run against SQLite here and against PostgreSQL in
//! tests/redis (which includes this file), so the two implementations cannot drift apart.

use std::sync::Arc;

use parley::desk::canned::Shortcut;
use parley::desk::store::{
    Article, ArticleId, CannedReply, ContentStore, Deflection, PutOutcome, Revision,
};
use parley::domain::VisitorId;
use parley::routing::Categories;

const DAY: u64 = 86_400_000;
/// 2024-05-01T00:00:00Z.
const MAY_1: u64 = 1_714_521_600_000;

fn article(title: &str, lang: &str, at: u64) -> Article {
    Article {
        id: ArticleId::new(),
        title: title.into(),
        body: format!("{title}: the body"),
        lang: lang.into(),
        tags: vec!["fees".into(), "转账".into()],
        url: Some("https://help.example.com/a".into()),
        created_at: at,
        updated_at: at,
    }
}

fn reply(shortcut: &str, text: &str) -> CannedReply {
    CannedReply {
        shortcut: Shortcut::parse(shortcut).unwrap(),
        title: format!("Title of {shortcut}"),
        text: text.into(),
        updated_at: 7,
    }
}

/// Runs every check on a store with empty desk tables.
pub async fn check_content_store(store: Arc<dyn ContentStore>) {
    articles_round_trip_and_bump_the_revision(&*store).await;
    deflections_are_counted_per_day_category_and_article(&*store).await;
    canned_replies_are_upserted_within_the_bound(&*store).await;
}

async fn articles_round_trip_and_bump_the_revision(store: &dyn ContentStore) {
    let start = store.kb_revision().await.unwrap();
    assert_eq!(store.all_articles().await.unwrap(), (start, vec![]));

    let en = article("Network fees", "en", 100);
    let zh = article("如何查询转账状态", "zh", 200);
    let r1 = store.insert_article(&en, 10).await.unwrap().unwrap();
    let r2 = store.insert_article(&zh, 10).await.unwrap().unwrap();
    assert_eq!((r1, r2), (Revision(start.0 + 1), Revision(start.0 + 2)));
    assert_eq!(store.kb_revision().await.unwrap(), r2);
    assert_eq!(store.article(zh.id).await.unwrap(), Some(zh.clone()));
    assert_eq!(store.article(ArticleId::new()).await.unwrap(), None);

    // At the bound nothing is stored, the revision included.
    assert_eq!(
        store
            .insert_article(&article("Third", "en", 300), 2)
            .await
            .unwrap(),
        None
    );
    assert_eq!(store.kb_revision().await.unwrap(), r2);

    // An update keeps created_at, whatever the caller passed.
    let edited = Article {
        title: "Network fees, explained".into(),
        tags: vec![],
        url: None,
        created_at: 999,
        updated_at: 400,
        ..en.clone()
    };
    let (r3, stored) = store.update_article(&edited).await.unwrap().unwrap();
    assert_eq!(r3, Revision(r2.0 + 1));
    assert_eq!(stored.created_at, 100);
    assert_eq!(store.article(en.id).await.unwrap(), Some(stored.clone()));
    let ghost = article("Ghost", "en", 1);
    assert_eq!(store.update_article(&ghost).await.unwrap(), None);
    assert_eq!(store.delete_article(ghost.id).await.unwrap(), None);
    assert_eq!(
        store.kb_revision().await.unwrap(),
        r3,
        "misses bump nothing"
    );

    // Most recently updated first, and by language.
    let listed: Vec<ArticleId> = store
        .list_articles(None, 10, 0)
        .await
        .unwrap()
        .iter()
        .map(|a| a.id)
        .collect();
    assert_eq!(listed, [en.id, zh.id]);
    let zh_only = store.list_articles(Some("zh"), 10, 0).await.unwrap();
    assert_eq!(zh_only, std::slice::from_ref(&zh));
    assert_eq!(
        store.list_articles(None, 1, 1).await.unwrap(),
        std::slice::from_ref(&zh)
    );

    let (revision, mut all) = store.all_articles().await.unwrap();
    all.sort_by_key(|a| a.id);
    let mut expected = vec![stored, zh.clone()];
    expected.sort_by_key(|a| a.id);
    assert_eq!((revision, all), (r3, expected));

    assert_eq!(
        store.delete_article(zh.id).await.unwrap(),
        Some(Revision(r3.0 + 1))
    );
    assert_eq!(store.article(zh.id).await.unwrap(), None);
    store.delete_article(en.id).await.unwrap().unwrap();
}

async fn deflections_are_counted_per_day_category_and_article(store: &dyn ContentStore) {
    let categories = Categories::new(&["account", "transaction"]);
    let a = article("Fees", "en", 1);
    let b = article("转账", "zh", 2);
    store.insert_article(&a, 10).await.unwrap().unwrap();
    store.insert_article(&b, 10).await.unwrap().unwrap();
    let deflect = |article: &Article, category: Option<&str>, ts: u64| Deflection {
        article_id: article.id,
        visitor_id: Some(VisitorId::parse("v1").unwrap()),
        category: category.map(|c| categories.parse(c).unwrap()),
        ts,
    };
    for d in [
        deflect(&a, Some("transaction"), MAY_1 + 10),
        deflect(&a, Some("transaction"), MAY_1 + DAY - 1),
        deflect(&b, Some("transaction"), MAY_1 + 5),
        deflect(&a, None, MAY_1 + 20),
        deflect(&a, Some("account"), MAY_1 + 30),
        // The next UTC day.
        deflect(&a, Some("transaction"), MAY_1 + DAY),
        // Outside the range asked for below.
        deflect(&a, Some("transaction"), MAY_1 - 1),
        deflect(&a, Some("transaction"), MAY_1 + 2 * DAY),
    ] {
        assert!(store.insert_deflection(&d).await.unwrap());
    }
    assert!(!store
        .insert_deflection(&deflect(&article("Nope", "en", 1), None, MAY_1))
        .await
        .unwrap());

    let counts: Vec<(String, Option<String>, ArticleId, u64)> = store
        .deflection_counts(MAY_1, MAY_1 + 2 * DAY)
        .await
        .unwrap()
        .into_iter()
        .map(|c| (c.day, c.category, c.article_id, c.count))
        .collect();
    let day = |d: &str| d.to_string();
    let category = |c: &str| Some(c.to_string());
    // Within a day and category, rows come by article id.
    let mut transaction = vec![(a.id, 2), (b.id, 1)];
    transaction.sort();
    let mut expected = vec![
        (day("2024-05-01"), None, a.id, 1),
        (day("2024-05-01"), category("account"), a.id, 1),
    ];
    expected.extend(
        transaction
            .into_iter()
            .map(|(id, n)| (day("2024-05-01"), category("transaction"), id, n)),
    );
    expected.push((day("2024-05-02"), category("transaction"), a.id, 1));
    assert_eq!(counts, expected);

    // Deleting an article keeps its deflections in the reports.
    store.delete_article(a.id).await.unwrap().unwrap();
    let after = store
        .deflection_counts(MAY_1, MAY_1 + 2 * DAY)
        .await
        .unwrap();
    assert_eq!(after.len(), expected.len());
    store.delete_article(b.id).await.unwrap().unwrap();
}

async fn canned_replies_are_upserted_within_the_bound(store: &dyn ContentStore) {
    let refund = reply("refund-delay", "Hi {{visitor.name}}, refunds take 3 days.");
    assert_eq!(
        store.put_canned_reply(&refund, 2).await.unwrap(),
        PutOutcome::Created
    );
    let kyc = reply("kyc", "您好 {{visitor.name|}}");
    assert_eq!(
        store.put_canned_reply(&kyc, 2).await.unwrap(),
        PutOutcome::Created
    );
    // At the bound: a new shortcut is refused, an existing one is still replaced.
    assert_eq!(
        store
            .put_canned_reply(&reply("third", "x"), 2)
            .await
            .unwrap(),
        PutOutcome::Full
    );
    let refund2 = CannedReply {
        text: "Refunds take 5 days.".into(),
        updated_at: 8,
        ..refund.clone()
    };
    assert_eq!(
        store.put_canned_reply(&refund2, 2).await.unwrap(),
        PutOutcome::Replaced
    );
    assert_eq!(
        store.canned_reply(&refund.shortcut).await.unwrap(),
        Some(refund2.clone())
    );
    assert_eq!(
        store.canned_replies().await.unwrap(),
        [kyc.clone(), refund2.clone()]
    );
    assert!(store.delete_canned_reply(&kyc.shortcut).await.unwrap());
    assert!(!store.delete_canned_reply(&kyc.shortcut).await.unwrap());
    assert_eq!(store.canned_reply(&kyc.shortcut).await.unwrap(), None);
    assert!(store.delete_canned_reply(&refund.shortcut).await.unwrap());
}
