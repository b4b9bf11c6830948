"""What an action is made of: kinds, categories, word limits, and the library's words.

The paper has Gemini Ultra write 100 actions per movie (50 generic, 50 personalised with a
user profile) across five categories (§4.3, §5.1). The hand-written templates below, filled
from `VOCAB`, the movie and the profile, stand in for it or top it up; `VERBS` is the test
for "is an instruction" that both the templates and the LLM's lines must pass.
"""

from __future__ import annotations

ACTION_KINDS = ("generic", "personalised")
# The paper's five categories, asked for to make the action set diverse.
CATEGORIES = ("plot", "characters", "visuals", "themes", "audience")
CATEGORY_DESCRIPTIONS = {
    "plot": "plot changes",
    "characters": "character enhancements",
    "visuals": "visual and storytelling improvements",
    "themes": "thematic exploration",
    "audience": "audience-appeal adjustments",
}
# Actions are short imperative sentences (< 25 words).
MIN_ACTION_WORDS, MAX_ACTION_WORDS = 3, 24

# Static slot vocabularies. A template writes "a {genre} film"; the library fixes "a" to "an".
VOCAB: dict[str, tuple[str, ...]] = {
    "archetype": (
        "a mentor", "a rival", "a loyal sidekick", "a double agent", "an estranged sibling",
        "a reluctant hero", "a charming con artist", "a retired detective",
        "a mysterious stranger", "a corrupt official", "a child prodigy",
        "a disgraced scientist", "a street-smart teenager", "a grieving widow",
        "a ruthless tycoon", "a loyal robot", "an eccentric inventor", "a former soldier",
        "a fortune teller", "a small-town sheriff", "a rebellious heir",
        "an undercover journalist"),
    "setting": (
        "a remote Arctic research station", "a sprawling near-future megacity",
        "a sleepy coastal town", "an orbiting space station", "a desert mining colony",
        "a crumbling Gothic mansion", "a bustling night market", "a snowbound mountain village",
        "a luxury ocean liner", "a post-apocalyptic wasteland", "a tropical island resort",
        "an underground city", "a strict boarding school", "a travelling circus",
        "a Hollywood film set", "a medieval castle", "a submarine on patrol",
        "a haunted lighthouse"),
    "era": (
        "the Roaring Twenties", "the 1950s", "the 1970s", "the 1980s", "Victorian London",
        "ancient Rome", "feudal Japan", "the American Old West", "the Second World War",
        "the Cold War", "the Renaissance", "the distant future", "the near future",
        "the Middle Ages", "the Prohibition era", "the swinging sixties",
        "the early days of the internet"),
    "tone": (
        "darker", "lighter", "more whimsical", "grittier", "more satirical", "more melancholic",
        "more suspenseful", "more hopeful", "more absurd", "more romantic", "more intimate",
        "more epic", "more playful", "more unsettling", "more nostalgic"),
    "theme": (
        "redemption", "family loyalty", "identity", "the cost of ambition", "grief and healing",
        "friendship", "power and corruption", "technology and humanity", "social class",
        "forgiveness", "coming of age", "freedom", "memory", "trust and betrayal",
        "environmental collapse", "justice", "sacrifice", "belonging", "faith and doubt",
        "greed"),
    "style": (
        "black-and-white cinematography", "long single-take sequences",
        "handheld documentary-style camera work", "a saturated neon colour palette",
        "stop-motion animation", "practical effects and stunts", "sweeping aerial shots",
        "stark high-contrast lighting", "a muted, washed-out palette",
        "dynamic camera angles and fast editing", "symmetrical storybook framing",
        "slow-motion set pieces", "found-footage sequences", "hand-drawn animation",
        "split-screen sequences", "candlelit interiors", "rain-soaked night scenes"),
    "device": (
        "a nonlinear timeline", "voice-over narration", "a framing story",
        "an unreliable narrator", "multiple points of view", "a countdown structure",
        "a series of flashbacks", "on-screen chapter titles", "a story within a story",
        "a real-time structure"),
    "audience": (
        "families", "teenagers", "older viewers", "young children", "international audiences",
        "date-night couples", "arthouse audiences", "casual weekend viewers",
        "college students", "history buffs", "sports fans", "gamers"),
}
# Slots filled from the movie: genres it lacks / has (as words), and its most used user tags.
MOVIE_SLOTS = ("new_genre", "own_genre", "tag")
# Slots filled from the profile; every personalised template uses at least one of them.
PROFILE_SLOTS = ("liked_genre", "disliked_genre", "liked_movie", "disliked_movie", "user_tag")

TEMPLATES: dict[tuple[str, str], tuple[str, ...]] = {
    ("generic", "plot"): (
        "Add a twist in which {archetype} turns out to be behind everything.",
        "Shift the setting to {setting}.",
        "Move the story to {era}.",
        "Make it more of a {new_genre} film.",
        "Blend {new_genre} elements into the plot.",
        "Tone down the {own_genre} elements of the plot.",
        "Lean harder into the {own_genre} side of the story.",
        "Emphasise what viewers tag as {tag}.",
        "Add a subplot about {theme}.",
        "Give the story a bittersweet ending.",
        "Replace the climax with a showdown against {archetype}.",
        "Add a ticking-clock deadline that forces the hero to act.",
        "Start the story in the middle of a crisis.",
        "Add a heist subplot set in {setting}.",
        "Reveal a hidden family connection between the hero and {archetype}.",
        "Let the villain win in the end.",
        "Introduce a betrayal by {archetype} halfway through.",
        "Cut the romantic subplot.",
        "Add a cliffhanger ending that sets up a sequel.",
        "Add a chase sequence through {setting}.",
        "Make the ending {tone}.",
        "Raise the stakes so the fate of {setting} hangs in the balance.",
    ),
    ("generic", "characters"): (
        "Add {archetype} as a new supporting character.",
        "Give the protagonist a rivalry with {archetype}.",
        "Make the villain more sympathetic with a tragic backstory.",
        "Give the lead a secret from their past.",
        "Add a mentor figure who guides the hero.",
        "Give {archetype} a bigger role as the hero's confidant.",
        "Make the protagonist an outsider from {setting}.",
        "Give the hero a personal flaw they must overcome.",
        "Deepen the friendship between the two leads.",
        "Swap the gender of the lead character.",
        "Make the antagonist {archetype}.",
        "Give the main character an arc about {theme}.",
        "Add a comic-relief sidekick.",
        "Make the hero older and wiser.",
        "Give the supporting cast more screen time.",
        "Reveal that the narrator is {archetype}.",
        "Make the protagonist {tone}.",
        "Add an ensemble of misfits who help the hero.",
        "Pair the lead with {archetype} as an unlikely partner.",
        "Turn the love interest into {archetype}.",
        "Give every main character a motive tied to {theme}.",
        "Make the lead a {own_genre} archetype with a surprising weakness.",
    ),
    ("generic", "visuals"): (
        "Shoot it with {style}.",
        "Tell the story through {device}.",
        "Use {style} for the key scenes.",
        "Give the film a {tone} colour palette.",
        "Add more dynamic camera angles and editing.",
        "Use more practical effects and stunts.",
        "Speed up the pacing of the second act.",
        "Restructure the story around {device}.",
        "Open with a striking long take.",
        "Add {device} to the storytelling.",
        "Give the finale the visual style of a {new_genre} film.",
        "Borrow the visual language of classic {own_genre} films.",
        "Use a recurring visual motif tied to {theme}.",
        "Stage the climax in {setting}.",
        "Add a memorable musical score with a recurring theme.",
        "Show key events from the point of view of {archetype}.",
        "Replace exposition with visual storytelling.",
        "Make what viewers tag as {tag} visually striking.",
        "Add a montage set to music from {era}.",
        "Use weather and lighting to make the mood {tone}.",
        "Recreate the look of films from {era}.",
    ),
    ("generic", "themes"): (
        "Explore the theme of {theme}.",
        "Make {theme} the central theme.",
        "Add a subtext about {theme} in {era}.",
        "Make the story a meditation on {theme}.",
        "Explore how {archetype} wrestles with {theme}.",
        "Add social commentary on inequality.",
        "Explore the moral cost of the hero's choices.",
        "Tie the ending to the theme of {theme}.",
        "Give the story an environmental message.",
        "Explore what viewers tag as {tag} more deeply.",
        "Make the overall tone {tone}.",
        "Use the {own_genre} conventions to explore {theme}.",
        "Recast the story as an allegory of {theme}.",
        "Explore the hero's relationship with their family.",
        "Question whether the hero's victory was worth the price.",
        "Add a spiritual dimension to the story.",
        "Explore the clash between tradition and modernity.",
        "Reframe the conflict as a struggle over {theme}.",
        "Add a political undercurrent drawn from {era}.",
        "Explore {theme} through {new_genre} storytelling.",
    ),
    ("generic", "audience"): (
        "Make it appeal to {audience}.",
        "Add humour aimed at {audience}.",
        "Shorten the runtime to under 100 minutes.",
        "Lower the age rating by cutting graphic violence.",
        "Add a catchy theme song.",
        "Cast a well-known star in the lead role.",
        "Give it a crowd-pleasing happy ending.",
        "Add {new_genre} elements to widen its audience.",
        "Tone down the {own_genre} elements to reach {audience}.",
        "Make it a family-friendly adventure.",
        "Add references that {audience} will recognise.",
        "Play up what its fans tag as {tag}.",
        "Make the {own_genre} elements more accessible to newcomers.",
        "Add action set pieces for thrill-seekers.",
        "Add a romance to broaden its appeal.",
        "Set up a franchise with an open ending.",
        "Rework it into a {new_genre} crowd-pleaser for {audience}.",
        "Add a diverse ensemble cast to broaden its appeal.",
        "Make the dialogue snappier and more quotable.",
        "Simplify the plot so it works for {audience}.",
        "Add a heartwarming animal companion.",
    ),
    ("personalised", "plot"): (
        "Add plot elements this viewer loves: {liked_genre}.",
        "Give the plot the feel of {liked_movie}.",
        "Remove the plot elements this viewer dislikes: {disliked_genre}.",
        "Move the story to {setting} and add {liked_genre} twists.",
        "Structure the plot like {liked_movie}.",
        "Avoid plot turns that feel like {disliked_movie}.",
        "Build the plot around what this viewer tags as {user_tag}.",
        "Add a twist in the style of {liked_movie}.",
        "Replace the {disliked_genre} plot beats with {liked_genre} ones.",
        "Shift the story to {era} with a {liked_genre} edge.",
        "Give it an ending in the spirit of {liked_movie}.",
        "Cut the subplots that resemble {disliked_movie}.",
        "Add a {liked_genre} subplot involving {archetype}.",
        "Borrow the central conflict of {liked_movie}.",
        "Steer the plot away from {disliked_genre} territory.",
        "Give the hero a goal that fans of {liked_movie} would root for.",
    ),
    ("personalised", "characters"): (
        "Add a character straight out of {liked_movie}.",
        "Make the hero resemble the lead of {liked_movie}.",
        "Introduce {archetype} with a {liked_genre} backstory.",
        "Remove the {disliked_genre} traits from the characters.",
        "Write the villain like the antagonist of {liked_movie}.",
        "Make the characters less like those in {disliked_movie}.",
        "Give the main character traits this viewer tags as {user_tag}.",
        "Add {archetype} who would fit in a {liked_genre} film.",
        "Give the supporting cast the chemistry of {liked_movie}.",
        "Turn the sidekick into a {liked_genre} hero.",
        "Cut the characters that feel like {disliked_genre} clichés.",
        "Make the protagonist's journey echo {liked_movie}.",
        "Give the hero the wit of the characters in {liked_movie}.",
        "Make the villain a {liked_genre} figure this viewer would enjoy.",
        "Give the characters dialogue in the style of {liked_movie}.",
    ),
    ("personalised", "visuals"): (
        "Shoot it in the visual style of {liked_movie}.",
        "Give it the feel of {liked_movie}.",
        "Use {liked_genre} visual conventions for the climax.",
        "Avoid the look of {disliked_movie}.",
        "Drop the {disliked_genre} imagery this viewer dislikes.",
        "Pace it like {liked_movie}.",
        "Use {style} as in this viewer's favourite {liked_genre} films.",
        "Use imagery this viewer would tag as {user_tag}.",
        "Tell the story with the structure of {liked_movie}.",
        "Use {device}, as {liked_genre} films often do.",
        "Score it like a {liked_genre} film.",
        "Give the opening scene the energy of {liked_movie}.",
        "Match the colour palette of {liked_movie}.",
        "Use the editing rhythm of {liked_movie}.",
        "Stage the climax like a {liked_genre} set piece.",
    ),
    ("personalised", "themes"): (
        "Explore the themes this viewer loves in {liked_movie}.",
        "Explore {theme} the way {liked_movie} does.",
        "Frame {theme} through a {liked_genre} lens.",
        "Move away from the {disliked_genre} themes this viewer dislikes.",
        "Emphasise what this viewer tags as {user_tag}.",
        "Make the story's message closer to that of {liked_movie}.",
        "Avoid the heavy-handed themes of {disliked_movie}.",
        "Add {liked_genre} themes this viewer loves.",
        "Replace {disliked_genre} themes with {theme}.",
        "Explore {theme} in a way this viewer would tag as {user_tag}.",
        "Give the ending the emotional weight of {liked_movie}.",
        "Make the tone {tone}, like {liked_movie}.",
        "Tie the story to the ideas behind {liked_movie}.",
        "Give {theme} a {liked_genre} treatment.",
        "Avoid the message of {disliked_movie}.",
    ),
    ("personalised", "audience"): (
        "Make it appeal to fans of {liked_movie}.",
        "Make it appeal to {liked_genre} fans like this viewer.",
        "Remove what this viewer dislikes: {disliked_genre}.",
        "Add elements this viewer loves: {liked_genre}.",
        "Cut anything that resembles {disliked_movie}.",
        "Add moments this viewer would tag as {user_tag}.",
        "Make it a {liked_genre} crowd-pleaser for this viewer.",
        "Tone down the {disliked_genre} content to suit this viewer.",
        "Add nods for viewers who loved {liked_movie}.",
        "Make it as rewatchable as {liked_movie}.",
        "Balance the {own_genre} content with {liked_genre} for this viewer.",
        "Make it less like {disliked_movie} and more like {liked_movie}.",
        "Add {liked_genre} moments to hook this viewer.",
        "Keep the {disliked_genre} elements this viewer dislikes to a minimum.",
        "Give it a finale as satisfying as the one in {liked_movie}.",
    ),
}

# Imperative verbs an action may start with: the test for "is an instruction".
VERBS = frozenset("""
adapt add address adjust age allow alter amplify anchor avoid balance base blend boost borrow
bring build cast center centre change channel combine compress condense consider contrast
convert craft create cut darken deepen delete depict develop devote ditch downplay drop echo
elevate eliminate embrace emphasise emphasize end enhance enrich establish evoke examine expand
explore extend feature fill flesh flip focus follow foreshadow frame fuse give ground heighten
highlight hint imbue improve include incorporate increase infuse inject insert integrate
intensify introduce invert keep kill layer lean lengthen let lighten limit lower make match
merge minimise minimize mix modernise modernize move narrow offer omit open pace pair pick place
play portray provide push put question raise recast recreate redesign reduce refocus reframe
reimagine reinvent relocate remove rename reorder replace restructure retell reveal revise
rework rewrite root save score set shift shoot shorten show showcase simplify slow soften speed
split spotlight stage start steer streamline strengthen stress structure subvert swap switch
tell tie tighten tone transform transplant try turn twist underline underscore update use weave
widen write
""".split())
