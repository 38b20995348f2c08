"""Scripts the scenes speak."""

STORY = ("The morning was cold and bright. We walked down to the river before breakfast. "
         "A small boat was waiting at the end of the old wooden pier. My sister carried the basket "
         "with bread and cheese. The water was calm and very clear. We could see fish swimming near the stones. "
         "After an hour we rowed back home. Everyone was hungry and happy.")

SHORT_REPLIES = ["Yes.", "Okay, sure.", "Right away.", "Thanks, that helps!", "Got it.", "Of course, one moment."]

_READ = [
    "The lighthouse stood on a rock at the edge of the bay, white and tall against the grey sky.",
    "Every evening the keeper climbed its narrow stairs, one hundred and twelve of them, to light the lamp.",
    "He had done this for thirty years, in summer storms and in the long quiet nights of winter.",
    "Ships passed far out at sea, and their crews saw the light turning, slow and steady, and felt safe.",
    "In the mornings he wrote in his book: the wind, the waves, the birds, the boats that came and went.",
    "Once a small sailing boat lost its mast in a gale, and he rowed out through the waves to bring the sailors in.",
    "They stayed with him for three days, until the sea was calm, and they told him stories of distant harbours.",
    "When they left, they promised to come back, and every summer after that, they did.",
    "The keeper grew old, but the light never failed, not once, in all the years he kept it.",
    "Children from the village came to visit him, and he showed them the great lamp and the brass gears that turned it.",
    "He told them that a light is only useful if it is there every single night, whatever the weather.",
    "Now the lighthouse runs by itself, but people still say they can see an old man waving from the top.",
]
LONG_READ = " ".join(_READ)

PERSONA_SCRIPT = ("Good morning, and welcome back. Today is a quiet day at the harbour. "
                  "The boats are resting, and the water is calm. Would you like to hear the weather?")

#: Said whole while an actor is killed: four sentences, about 15 s (the Fault scene, `bench faults`).
FAULT_PARAGRAPH = ("The lighthouse keeper climbed the stairs every evening at dusk. He polished the great lens until "
                   "it shone, then lit the lamp and watched the ships pass. Some nights the fog rolled in so thick that "
                   "he could not see the water below. On those nights he rang the bell every minute until morning came.")
