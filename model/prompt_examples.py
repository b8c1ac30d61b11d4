"""The in-context examples the prompts show the model: all written for this project.

The research datasets (SAMSum, DialogSum, CSDS) may not be redistributed, so none of their text is
here; these chats and summaries imitate their *style* only (SAMSum: third person, names, one or two
short sentences; CSDS: "the customer asked … / the agent said …"). Changing any text here changes what
the model sees, so it is covered by ``model.prompts.PROMPT_VERSION``.

A chat line is ``(speaker, text)`` or ``(speaker, text, reply_to_ref)``; support chats use
``(speaker, text, reply_to_ref, role)`` with role ``user`` or ``agent``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

Line = tuple[Any, ...]


@dataclass(frozen=True)
class ExampleChat:
    lines: tuple[Line, ...]
    summary: str = ""
    #: Role-mode targets (``user``/``agent``/``all``) or an aspect target keyed by its focus.
    targets: dict[str, str] = field(default_factory=dict)


# -- overall: twelve chats per language, summaries in the SAMSum manner ------------------------------
# Eight short ones, then four longer and messier (a photo, banter, a shop): at prompts/5 these four
# raised ROUGE-1/2/L on the first 200 SAMSum validation dialogues from 44.1/19.7/36.1 to 45.0/20.4/36.6.

OVERALL_EN: tuple[ExampleChat, ...] = (
    ExampleChat(
        (
            ("Kate", "are you coming to the climbing gym tonight?"),
            ("Sam", "can't, my back still hurts from Saturday"),
            ("Kate", "oh no :( next week then?"),
            ("Sam", "yes, Tuesday should work"),
            ("Kate", "ok, I'll book us a slot at 7"),
        ),
        "Sam can't go climbing tonight because his back hurts. Kate will book a slot for Tuesday at 7.",
    ),
    ExampleChat(
        (
            ("Olivia", "Mum, have you seen my blue scarf?"),
            ("Mum", "It's in the drawer by the door"),
            ("Olivia", "not there :/"),
            ("Mum", "Check Dad's car then, you left it there on Sunday"),
            ("Olivia", "found it! thanks"),
        ),
        "Olivia found her blue scarf in Dad's car.",
    ),
    ExampleChat(
        (
            ("Ben", "guys, the landlord says the heating will be fixed on Thursday"),
            ("Chloe", "finally"),
            ("Ravi", "does he need someone at home?"),
            ("Ben", "yes, between 9 and 12", 3),
            ("Chloe", "I work from home on Thursdays, I can let him in"),
            ("Ravi", "great, thanks Chloe"),
        ),
        "The landlord will fix the heating on Thursday morning. Chloe will let him in.",
    ),
    ExampleChat(
        (
            ("Hugo", "did you watch the match?"),
            ("Nina", "only the second half. what a comeback!"),
            ("Hugo", "3-2 after being 0-2 down, unbelievable"),
            ("Nina", "that last-minute header 😱"),
            ("Hugo", "we have to go to the next home game"),
            ("Nina", "tickets go on sale Friday, I'll try to get two"),
        ),
        "Hugo and Nina's team won 3-2. Nina will try to get tickets for the next home game.",
    ),
    ExampleChat(
        (
            ("Emma", "Can you pick up Lily from school today? My meeting runs late"),
            ("Jack", "what time?"),
            ("Emma", "3:30"),
            ("Jack", "ok, I'll leave work early"),
            ("Emma", "you're a star. she has swimming after, her bag is in the hallway"),
            ("Jack", "got it"),
        ),
        "Jack will pick Lily up from school at 3:30 and take her swimming bag.",
    ),
    ExampleChat(
        (
            ("Zoe", "it's Mark's birthday on the 14th, shall we chip in for a present?"),
            ("Leo", "sure, what are you thinking?"),
            ("Zoe", "he wants new headphones, about 120"),
            ("Amy", "30 each then, I'm in"),
            ("Leo", "me too"),
            ("Dan", "count me in, I'll send you the money tonight"),
            ("Zoe", "great, I'll order them tomorrow"),
        ),
        "Zoe, Leo, Amy and Dan will pay 30 each for Mark's birthday headphones. "
        "Zoe will order them tomorrow.",
    ),
    ExampleChat(
        (
            ("Paula", "my flight to Lisbon got cancelled"),
            ("Greg", "no way! what happened?"),
            ("Paula", "strike at the airport. they rebooked me for Monday"),
            ("Greg", "so you miss the conference opening?"),
            ("Paula", "yes, but I can still give my talk on Tuesday"),
        ),
        "Paula's flight to Lisbon was cancelled by a strike. "
        "She is rebooked for Monday and will give her talk on Tuesday.",
    ),
    ExampleChat(
        (
            ("Tim", "do you still have the drill I lent you?"),
            ("Max", "yes, sorry! I forgot to bring it back"),
            ("Tim", "no worries, I need it on Saturday"),
            ("Max", "I'll drop it off on Friday evening"),
            ("Tim", "👍"),
        ),
        "Max will return Tim's drill on Friday evening.",
    ),
    # Longer, messier chats: the summary keeps the facts and plans and drops the banter.
    ExampleChat(
        (
            ("Megan", "<file_photo>"),
            ("Megan", "look who I ran into at the airport"),
            ("Tasha", "omg is that Mr Collins?? our old chemistry teacher?"),
            ("Megan", "yes! he's retired now and moving to Portugal"),
            ("Tasha", "good for him haha"),
            ("Tasha", "did he remember you?"),
            ("Megan", "he remembered I set the lab bench on fire 🙈"),
            ("Tasha", "legendary"),
            ("Megan", "he says hi btw"),
        ),
        "Megan met their old chemistry teacher Mr Collins at the airport. He is retired and moving to "
        "Portugal.",
    ),
    ExampleChat(
        (
            ("Carl", "Hi, is the blue sofa from your ad still available?"),
            ("Furniture Outlet", "Hello! Yes, we have one left in blue."),
            ("Carl", "Great. Do you deliver?"),
            ("Furniture Outlet", "Yes, delivery is 40 and we can come on Saturday or next Wednesday."),
            ("Carl", "Saturday please, in the morning if possible"),
            ("Furniture Outlet", "Saturday between 9 and 12 then. Can I have your address?"),
            ("Carl", "14 Elm Street, flat 3"),
            ("Furniture Outlet", "Booked. You pay on delivery."),
        ),
        "Carl is buying the blue sofa. Furniture Outlet will deliver it on Saturday between 9 and 12 for 40.",
    ),
    ExampleChat(
        (
            ("Ines", "I didn't get the job"),
            ("Ines", "they said the other candidate had more experience"),
            ("Maya", "oh no, I'm so sorry"),
            ("Maya", "you were perfect for it"),
            ("Ines", "I really thought the second interview went well"),
            ("Maya", "it's their loss. are you applying to the one at the museum?"),
            ("Ines", "I guess I should, the deadline is Friday"),
            ("Maya", "do it! I can read your cover letter tonight"),
            ("Ines", "thank you ❤️"),
        ),
        "Ines didn't get the job. She will apply for the museum job by Friday and Maya will read her "
        "cover letter tonight.",
    ),
    ExampleChat(
        (
            ("Rob", "who's up for bowling on Friday?"),
            ("Jen", "me!"),
            ("Alex", "Friday I have my sister's thing, Saturday?"),
            ("Rob", "Saturday the lanes are fully booked"),
            ("Jen", "what about Sunday afternoon?"),
            ("Alex", "Sunday works"),
            ("Rob", "ok Sunday at 3, I'll book two lanes"),
            ("Jen", "can I bring Tom?"),
            ("Rob", "sure, the more the merrier"),
            ("Alex", "🎳"),
        ),
        "Rob, Jen and Alex will go bowling on Sunday at 3. Rob will book two lanes and Jen will bring Tom.",
    ),
)

OVERALL_ZH: tuple[ExampleChat, ...] = (
    ExampleChat(
        (
            ("小林", "今晚还去打羽毛球吗？"),
            ("阿杰", "去不了，腰还疼"),
            ("小林", "那下周二？"),
            ("阿杰", "可以"),
            ("小林", "好，我订七点的场地"),
        ),
        "阿杰腰疼，今晚不能和小林打羽毛球。小林会订下周二晚上七点的场地。",
    ),
    ExampleChat(
        (
            ("妈妈", "你周末回家吃饭吗？"),
            ("小雨", "回，周六中午到"),
            ("妈妈", "想吃什么？"),
            ("小雨", "红烧肉！"),
            ("妈妈", "好，给你做"),
        ),
        "小雨周六中午回家吃饭，妈妈会给她做红烧肉。",
    ),
    ExampleChat(
        (
            ("王磊", "明天的部门聚餐改到周五了"),
            ("陈静", "为什么？"),
            ("王磊", "经理明天出差", 2),
            ("李想", "周五我可以"),
            ("陈静", "我也行，还是那家火锅店吗？"),
            ("王磊", "对，晚上六点半"),
        ),
        "因为经理出差，部门聚餐改到周五晚上六点半，还在那家火锅店。陈静和李想都能参加。",
    ),
    ExampleChat(
        (
            ("小张", "你看昨晚的比赛了吗？"),
            ("老周", "看了下半场，太精彩了"),
            ("小张", "最后一分钟绝杀！"),
            ("老周", "下个主场我们一起去吧"),
            ("小张", "好，周五开票我来抢"),
        ),
        "小张和老周看了昨晚最后一分钟绝杀的比赛。两人约好一起去看下个主场，小张周五开票时抢票。",
    ),
    ExampleChat(
        (
            ("刘芳", "今天能帮我去幼儿园接朵朵吗？我开会走不开"),
            ("赵强", "几点？"),
            ("刘芳", "四点半"),
            ("赵强", "行，我早点下班"),
            ("刘芳", "谢谢！她的书包在门口"),
        ),
        "刘芳要开会，赵强会提前下班，四点半去幼儿园接朵朵。",
    ),
    ExampleChat(
        (
            ("周敏", "下个月14号是小马生日，大家凑钱送个礼物？"),
            ("吴昊", "好啊，我参加。送什么？"),
            ("周敏", "他想要个耳机，大概六百"),
            ("孙悦", "那每人一百五，算我一个"),
            ("郑凯", "我也参加，晚上转你"),
            ("周敏", "好，明天我下单"),
        ),
        "周敏、吴昊、孙悦和郑凯每人出一百五十元，给小马买耳机作为生日礼物。周敏明天下单。",
    ),
    ExampleChat(
        (
            ("黄莉", "我去成都的航班取消了"),
            ("老马", "啊？怎么回事"),
            ("黄莉", "天气原因，改签到周一了"),
            ("老马", "那开幕式赶不上了？"),
            ("黄莉", "赶不上，不过周二的报告没问题"),
        ),
        "黄莉去成都的航班因天气取消，改签到周一。她赶不上开幕式，但周二的报告不受影响。",
    ),
    ExampleChat(
        (
            ("阿伟", "上次借你的电钻还在吗？"),
            ("大刘", "在，不好意思忘了还"),
            ("阿伟", "没事，我周六要用"),
            ("大刘", "周五晚上给你送过去"),
        ),
        "大刘还没还阿伟的电钻。阿伟周六要用，大刘周五晚上送过去。",
    ),
    # Longer, messier chats: the summary keeps the facts and plans and drops the banter.
    ExampleChat(
        (
            ("小美", "<图片>"),
            ("小美", "猜猜我在机场碰到谁了"),
            ("阿婷", "天哪，是我们高中的化学老师王老师吗？"),
            ("小美", "对！他退休了，要搬去海南"),
            ("阿婷", "真好哈哈"),
            ("阿婷", "他还记得你吗？"),
            ("小美", "记得我上课把实验台点着了 🙈"),
            ("阿婷", "传奇"),
            ("小美", "他让我替他跟你问好"),
        ),
        "小美在机场碰到了高中化学老师王老师。王老师已经退休，要搬去海南。",
    ),
    ExampleChat(
        (
            ("老周", "你好，广告里那款蓝色沙发还有吗？"),
            ("家具城", "您好，蓝色的还剩最后一套。"),
            ("老周", "能送货吗？"),
            ("家具城", "可以，运费四十，周六或者下周三送。"),
            ("老周", "周六吧，最好上午"),
            ("家具城", "那就周六上午九点到十二点，麻烦发一下地址。"),
            ("老周", "幸福路14号3单元"),
            ("家具城", "已登记，货到付款。"),
        ),
        "老周买了蓝色沙发，家具城周六上午九点到十二点送货，运费四十，货到付款。",
    ),
    ExampleChat(
        (
            ("小敏", "我没拿到那个offer"),
            ("小敏", "说另一个人经验更多"),
            ("佳佳", "啊，太可惜了"),
            ("佳佳", "你明明很合适"),
            ("小敏", "我还以为二面挺顺利的"),
            ("佳佳", "是他们的损失。博物馆那个岗位你投吗？"),
            ("小敏", "投吧，周五截止"),
            ("佳佳", "投！今晚我帮你看看求职信"),
            ("小敏", "谢谢 ❤️"),
        ),
        "小敏没拿到工作机会。她会在周五前投博物馆的岗位，佳佳今晚帮她看求职信。",
    ),
    ExampleChat(
        (
            ("大伟", "周五谁去打保龄球？"),
            ("晓丽", "我！"),
            ("阿强", "周五我姐有事，周六行吗？"),
            ("大伟", "周六球道都订满了"),
            ("晓丽", "周日下午呢？"),
            ("阿强", "周日可以"),
            ("大伟", "那就周日三点，我订两条球道"),
            ("晓丽", "我能带小唐来吗？"),
            ("大伟", "当然，人多热闹"),
            ("阿强", "🎳"),
        ),
        "大伟、晓丽和阿强周日下午三点去打保龄球，大伟订两条球道，晓丽会带小唐。",
    ),
)

# -- role modes (Baichuan2-Sum / CSDS style): support chats with user / agent / all targets ----------

ROLE_EN: tuple[ExampleChat, ...] = (
    ExampleChat(
        (
            ("Customer", "hi, my order arrived with a cracked screen", None, "user"),
            ("Dana", "Sorry to hear that! Could you send a photo of the damage?", None, "agent"),
            ("Customer", "sent", None, "user"),
            (
                "Dana",
                "Thanks. I've started a replacement, it ships tomorrow. You'll get a prepaid "
                "label to return the broken one.",
                None,
                "agent",
            ),
            ("Customer", "do I need the original box?", None, "user"),
            ("Dana", "No, any box is fine.", 5, "agent"),
            ("Customer", "great, thanks", None, "user"),
        ),
        targets={
            "user": "The customer's order arrived with a cracked screen; they sent a photo and asked "
            "whether the original box is needed for the return.",
            "agent": "The agent arranged a replacement that ships tomorrow, sent a prepaid return label "
            "and said any box will do.",
            "all": "The customer's order arrived with a cracked screen. The agent arranged a replacement "
            "shipping tomorrow and a prepaid return label; the original box is not needed.",
        },
    ),
    ExampleChat(
        (
            ("Customer", "I was charged twice for my subscription this month", None, "user"),
            ("Omar", "Let me check. Is the account under the email you're writing from?", None, "agent"),
            ("Customer", "yes", None, "user"),
            (
                "Omar",
                "I see two payments on the 3rd. I've refunded the duplicate, it takes 3-5 business days.",
                None,
                "agent",
            ),
            ("Customer", "will this happen again?", None, "user"),
            ("Omar", "No, it was a glitch during a card update and it's fixed now.", 5, "agent"),
        ),
        targets={
            "user": "The customer was charged twice for the subscription this month and asked whether "
            "it would happen again.",
            "agent": "The agent found two payments on the 3rd, refunded the duplicate within 3-5 "
            "business days and explained that a now-fixed glitch caused it.",
            "all": "The customer was charged twice this month. The agent refunded the duplicate "
            "payment (3-5 business days) and explained it was a glitch that has been fixed.",
        },
    ),
)

ROLE_ZH: tuple[ExampleChat, ...] = (
    ExampleChat(
        (
            ("用户", "我的订单显示已签收，但我没收到", None, "user"),
            ("客服", "亲，请提供一下订单号", None, "agent"),
            ("用户", "[订单编号]", None, "user"),
            ("客服", "查到了，快递放在了小区驿站", None, "agent"),
            ("用户", "我没收到取件通知啊", None, "user"),
            ("客服", "我这边联系快递员给您补发取件码，请留意短信", None, "agent"),
            ("用户", "好的，谢谢", None, "user"),
        ),
        targets={
            "user": "用户反映订单显示已签收但没有收到，也没有收到取件通知。",
            "agent": "客服查到快递放在小区驿站，表示会联系快递员补发取件码。",
            "all": "用户的订单显示已签收但没有收到。客服查到包裹在小区驿站，会联系快递员补发取件码。",
        },
    ),
    ExampleChat(
        (
            ("用户", "昨天买的耳机能退吗？", None, "user"),
            ("客服", "您好，请问是什么原因呢？", None, "agent"),
            ("用户", "音质不好，不想要了", None, "user"),
            ("客服", "七天内支持无理由退货，商品没有损坏就可以", None, "agent"),
            ("用户", "运费谁出？", None, "user"),
            ("客服", "无理由退货的运费需要您承担哦", None, "agent"),
            ("用户", "好吧，那我申请退货", None, "user"),
        ),
        targets={
            "user": "用户因音质不好想退昨天买的耳机，询问运费由谁承担，最后决定申请退货。",
            "agent": "客服说明七天内支持无理由退货，运费由用户承担。",
            "all": "用户因音质不好想退昨天买的耳机。客服表示七天内可以无理由退货，但运费由用户承担，"
            "用户决定申请退货。",
        },
    ),
)

# -- aspect: the focus goes with the chat; one example where the focus is not discussed --------------

ASPECT_EN: tuple[tuple[int, str, str], ...] = (
    # (index into OVERALL_EN, focus, target)
    (
        5,
        "who pays what",
        "Zoe, Leo, Amy and Dan each pay 30 towards Mark's headphones; Dan sends his share tonight.",
    ),
    (2, "the rent", "The chat does not mention the rent."),
)
ASPECT_ZH: tuple[tuple[int, str, str], ...] = (
    (5, "谁出多少钱", "周敏、吴昊、孙悦和郑凯每人出一百五十元，郑凯晚上转账。"),
    (2, "聚餐预算", "聊天中没有提到聚餐预算。"),
)

# -- chatsum: one compact worked example per language ------------------------------------------------
# The target is the compact JSON of ``model.prompts.summary_to_target``, from which the prompts cut the
# plan and the per-topic answers (``chatsum_training_pairs``): views keyed by
# speaker in order of first appearance, points with refs, decisions/actions only where they exist.

CHATSUM_EN = ExampleChat(
    (
        ("Priya", "morning! can we push the design review to Thursday? the mockups aren't ready"),
        ("Tom", "Thursday works for me"),
        ("Lena", "I'm out Thursday afternoon, morning ok?", 1),
        ("Priya", "10am Thursday then"),
        ("Tom", "👍"),
        ("Marco", "unrelated, but staging is throwing 502s again"),
        ("Tom", "since when?", 6),
        ("Marco", "about an hour, started after the nginx config change I think"),
        ("Lena", "that was me, sorry. rolling it back now"),
        ("Lena", "done, should be fine"),
        ("Marco", "yep, working again. can we add a config check to CI so this doesn't happen again?"),
        ("Tom", "I'll open a ticket and pick it up tomorrow"),
        ("Priya", "reminder: pizza friday, I'm ordering at 12"),
        ("Marco", "pepperoni pls"),
    ),
    '{"overall": "The team moved the design review to Thursday 10am, fixed staging after a bad nginx '
    'change, and planned Friday pizza.", '
    '"topics": ['
    '{"title": "Design review moved", "views": {"Priya": "Wants the review later because the mockups '
    'are not ready.", "Tom": "Is fine with Thursday.", "Lena": "Prefers Thursday morning."}, '
    '"points": [{"text": "The mockups are not ready yet.", "refs": [1]}], '
    '"decisions": [{"text": "Design review on Thursday at 10am.", "refs": [3, 4]}]}, '
    '{"title": "Staging 502 errors", "views": {"Tom": "Offers to add a config check to CI.", '
    '"Lena": "Admits her nginx change caused it and rolled it back.", "Marco": "Reports the errors '
    'and wants CI to catch bad configs."}, '
    '"points": [{"text": "A nginx config change broke staging; the rollback fixed it.", '
    '"refs": [8, 9, 11]}], '
    '"actions": [{"owner": "Tom", "text": "Open a ticket for a CI config check tomorrow.", "refs": [12]}]}, '
    '{"title": "Pizza Friday", "views": {"Priya": "Plans to order pizza at 12 on Friday.", '
    '"Marco": "Wants pepperoni."}, '
    '"points": [{"text": "Pizza is ordered at 12 on Friday.", "refs": [13]}]}]}',
)

CHATSUM_ZH = ExampleChat(
    (
        ("小雅", "早！设计评审能不能改到周四？稿子还没好"),
        ("老唐", "周四我可以"),
        ("丽娜", "我周四下午不在，上午行吗？", 1),
        ("小雅", "那就周四上午十点"),
        ("老唐", "👍"),
        ("马可", "另外，测试环境又报502了"),
        ("老唐", "什么时候开始的？", 6),
        ("马可", "一个小时前，好像是改了nginx配置之后"),
        ("丽娜", "是我改的，抱歉，马上回滚"),
        ("丽娜", "好了，应该没问题了"),
        ("马可", "恢复了。能不能在CI里加个配置检查，免得再出这种事？"),
        ("老唐", "我来建个工单，明天开始做"),
        ("小雅", "提醒：周五吃披萨，我十二点下单"),
        ("马可", "我要意式香肠的"),
    ),
    '{"overall": "设计评审改到周四上午十点；测试环境因nginx配置出错已回滚修复；周五中午订披萨。", '
    '"topics": ['
    '{"title": "设计评审改期", "views": {"小雅": "希望推迟评审，因为稿子没好。", "老唐": "同意改到周四。", '
    '"丽娜": "表示只有周四上午有空。"}, '
    '"points": [{"text": "设计稿还没准备好。", "refs": [1]}], '
    '"decisions": [{"text": "评审定在周四上午十点。", "refs": [3, 4]}]}, '
    '{"title": "测试环境502错误", "views": {"老唐": "负责在CI里加配置检查。", '
    '"丽娜": "承认是自己的nginx改动导致的，已回滚。", "马可": "报告了错误，希望CI能发现错误配置。"}, '
    '"points": [{"text": "nginx配置改动导致502，回滚后恢复。", "refs": [8, 9, 11]}], '
    '"actions": [{"owner": "老唐", "text": "明天建工单并加CI配置检查。", "refs": [12]}]}, '
    '{"title": "周五披萨", "views": {"小雅": "负责周五十二点订披萨。", "马可": "想要意式香肠口味。"}, '
    '"points": [{"text": "周五十二点订披萨。", "refs": [13]}]}]}',
)
