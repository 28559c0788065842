"""Write lift_mlx/data/haystack.txt, the filler text of the needle-in-a-haystack test.

The text is composed, deterministically, from hand-written topics and sentence templates, so
it is free to ship and identical on every run. It reads as plain expository prose about
everyday science, craft and engineering; the needles (fictional facts) must stand out from it,
so none of their keywords may occur here (checked below and in tests/test_niah.py).

    python scripts/make_haystack.py            # rewrite the file
    python scripts/make_haystack.py --check    # fail if the file is not what this script writes
"""

from __future__ import annotations

import argparse
import random
import re
import sys
from pathlib import Path

OUT = Path(__file__).resolve().parent.parent / "lift_mlx" / "data" / "haystack.txt"
TARGET_BYTES = 220_000  # ~40-50k tokens; build_niah repeats the text for longer contexts
SEED = 20250214

# Words of the default needles; the haystack must not contain any of them.
FORBIDDEN = (
    "cardamom", "smoked", "stew", "lighthouse", "velvet", "heron", "observatory", "marrow",
    "tangerine", "otter", "sailboat", "varga", "giraffe", "chess", "purple", "halloway", "stamp",
)  # fmt: skip

# Each topic: what it is called, its field, things to talk about, people who work with it,
# places where it is seen, a few adjectives, and hand-written facts.
TOPICS = [
    {
        "topic": "dry stone walls",
        "field": "rural building",
        "things": ["the batter of the wall", "the through stones", "the hearting",
                   "the coping", "frost heave", "the footings"],
        "people": ["waller", "mason", "farmer"],
        "places": ["the upland pastures", "the old sheep folds", "the valley boundaries"],
        "adjectives": ["patient", "weathered", "orderly"],
        "facts": [
            "A dry stone wall holds together without mortar, relying on gravity and on the "
            "careful placement of every stone.",
            "Builders lay the largest stones at the bottom and make the wall narrower as it "
            "rises, so that its weight leans inward on itself.",
            "Long through stones are set across the full width of the wall at intervals to tie "
            "the two faces together.",
            "The gap between the two faces is packed with small broken stone, known as "
            "hearting, which stops the faces from slumping inward.",
            "A well built wall can stand for two centuries with only occasional repairs.",
            "Because water drains freely through the gaps, such walls suffer less from frost "
            "than solid masonry does.",
            "Many walls double as habitat, sheltering mosses, lichens, beetles and small "
            "mammals in their crevices.",
        ],
    },
    {
        "topic": "honeybee colonies",
        "field": "apiculture",
        "things": ["the brood nest", "the winter cluster", "the nectar flow",
                   "the queen's laying rate", "the comb", "swarming"],
        "people": ["beekeeper", "apiarist", "naturalist"],
        "places": ["the hillside orchards", "the heather moors", "the town allotments"],
        "adjectives": ["busy", "fragrant", "intricate"],
        "facts": [
            "A strong colony in midsummer can hold fifty thousand worker bees, almost all of "
            "them female.",
            "Worker bees change jobs as they age, moving from cleaning cells to feeding larvae, "
            "building comb, guarding the entrance and finally foraging.",
            "In cold weather the bees form a tight cluster and shiver their flight muscles to "
            "keep the centre warm.",
            "Foragers tell their sisters where food is by dancing on the comb, the angle of the "
            "dance pointing relative to the sun.",
            "Honey is nectar that the bees have concentrated by fanning away water until it "
            "keeps without spoiling.",
            "Swarming is how a colony reproduces: the old queen leaves with part of the workers "
            "and a new queen takes over the hive.",
            "Beekeepers inspect frames slowly and calmly, since sudden movements alarm the "
            "guards.",
        ],
    },
    {
        "topic": "river deltas",
        "field": "geomorphology",
        "things": ["the sediment load", "the distributary channels", "the tidal range",
                   "subsidence", "the levees", "the mouth bars"],
        "people": ["geologist", "hydrologist", "surveyor"],
        "places": ["the lower floodplain", "the coastal lagoons", "the reed flats"],
        "adjectives": ["shifting", "fertile", "low-lying"],
        "facts": [
            "A delta forms where a river slows on meeting still water and drops the sediment "
            "it has carried from upstream.",
            "Over centuries the main channel wanders, abandoning one lobe of the delta and "
            "building another.",
            "Natural levees grow along the banks because floodwater drops its coarsest grains "
            "as soon as it leaves the channel.",
            "Deltas shaped mainly by waves tend to have smooth, curving shorelines, while those "
            "shaped by the river reach out in long fingers.",
            "Many deltas are sinking slowly as their soft sediments compact under their own "
            "weight.",
            "Dams upstream trap sediment that would otherwise have replenished the delta front.",
            "The rich soils of deltas have supported dense farming communities for thousands "
            "of years.",
        ],
    },
    {
        "topic": "mountain glaciers",
        "field": "glaciology",
        "things": ["the accumulation zone", "the terminal moraine", "the crevasse fields",
                   "basal sliding", "the snow line", "the meltwater streams"],
        "people": ["glaciologist", "mountain guide", "climber"],
        "places": ["the upper cirques", "the valley heads", "the high passes"],
        "adjectives": ["slow", "immense", "blue-white"],
        "facts": [
            "A glacier grows where more snow falls each winter than melts each summer, and the "
            "surplus slowly turns to ice.",
            "Under its own weight, thick ice deforms and flows downhill like an extremely stiff "
            "liquid.",
            "Crevasses open where the ice is stretched, for instance where the valley floor "
            "steepens.",
            "Rocks frozen into the base of the glacier scrape the bedrock, leaving long parallel "
            "scratches.",
            "When a glacier retreats, it leaves behind ridges of rubble called moraines that "
            "mark its former edges.",
            "The meltwater that pours from a glacier in summer is milky with finely ground rock "
            "flour.",
            "Measurements of a glacier's length and thickness, repeated over decades, are among "
            "the clearest records of a changing climate.",
        ],
    },
    {
        "topic": "sourdough baking",
        "field": "food science",
        "things": ["the starter", "the hydration of the dough", "the proof",
                   "the gluten network", "the crust", "fermentation temperature"],
        "people": ["baker", "miller", "home cook"],
        "places": ["the village bakeries", "the market stalls", "the farmhouse kitchens"],
        "adjectives": ["tangy", "crackling", "airy"],
        "facts": [
            "A sourdough starter is a culture of wild yeasts and lactic acid bacteria kept alive "
            "with regular feeds of flour and water.",
            "The bacteria produce acids that give the bread its sour taste and help it keep "
            "longer.",
            "Warmer dough ferments faster, so bakers adjust the water temperature with the "
            "seasons.",
            "Folding the dough at intervals strengthens the gluten without the hard work of "
            "kneading.",
            "A long, cool rise develops more flavour than a short, warm one.",
            "Steam in the first minutes of baking keeps the crust soft long enough for the loaf "
            "to expand fully.",
            "Scoring the top of the loaf with a blade controls where it bursts open in the "
            "oven.",
        ],
    },
    {
        "topic": "rocky tide pools",
        "field": "marine ecology",
        "things": ["the tidal cycle", "the water temperature", "the barnacle zone",
                   "salinity", "wave exposure", "the kelp fringe"],
        "people": ["marine biologist", "naturalist", "student"],
        "places": ["the rocky headlands", "the sheltered coves", "the outer ledges"],
        "adjectives": ["crowded", "briny", "changeable"],
        "facts": [
            "Twice a day the falling tide leaves pools of seawater stranded among the rocks.",
            "Animals in the upper pools must survive hours of warm, salty water on sunny days "
            "and diluted water when it rains.",
            "Life on rocky shores is arranged in bands, each species living as high as it can "
            "tolerate drying out.",
            "Limpets return to the same spot on the rock after each feeding trip, grinding a "
            "shallow scar that fits their shell.",
            "Sea anemones fold in their tentacles when the tide is out to hold on to moisture.",
            "Grazing snails keep the rocks from being smothered by seaweed.",
            "Visitors are asked to turn rocks back over after looking beneath them, since the "
            "creatures underneath depend on the shade.",
        ],
    },
    {
        "topic": "canal locks",
        "field": "civil engineering",
        "things": ["the lock chamber", "the paddles", "the balance beams",
                   "the water supply at the summit", "the gates", "the towpath"],
        "people": ["lock keeper", "boatman", "engineer"],
        "places": ["the summit pound", "the flight of locks", "the canal basin"],
        "adjectives": ["quiet", "methodical", "sturdy"],
        "facts": [
            "A lock lifts or lowers a boat by filling or emptying a chamber closed by gates at "
            "each end.",
            "Small sluices called paddles let water in or out gradually so that the boat is not "
            "thrown about.",
            "Every time a boat passes through a lock going downhill, a chamber full of water "
            "flows towards the lower canal.",
            "Canal builders fed the highest section from reservoirs and streams, because every "
            "passage drains some of it.",
            "Where the ground rises steeply, locks are built in flights, with the top gate of "
            "one serving as the bottom gate of the next.",
            "Mitre gates meet at an angle pointing upstream, so the pressure of the water holds "
            "them closed.",
            "The horses that once pulled barges walked along the towpath beside the water.",
        ],
    },
    {
        "topic": "mechanical clocks",
        "field": "horology",
        "things": ["the escapement", "the pendulum", "the gear train",
                   "the mainspring", "temperature drift", "the striking mechanism"],
        "people": ["clockmaker", "restorer", "collector"],
        "places": ["the town hall towers", "the workshop benches", "the cathedral belfries"],
        "adjectives": ["precise", "rhythmic", "delicate"],
        "facts": [
            "A mechanical clock turns the steady fall of a weight or the unwinding of a spring "
            "into regular steps.",
            "The escapement releases the gear train one tooth at a time and gives the pendulum "
            "a small push on each swing.",
            "A pendulum's period depends on its length, not on how wide it swings, as long as "
            "the swing is small.",
            "Because metal expands in warm weather, a simple pendulum runs slow in summer and "
            "fast in winter.",
            "Clockmakers compensated by combining metals that expand at different rates, so that "
            "the effective length stayed constant.",
            "Early tower clocks often had no dial at all and announced the hours only by "
            "striking a bell.",
            "A good restorer records every part before dismantling a movement, since no two old "
            "clocks are quite alike.",
        ],
    },
    {
        "topic": "handmade paper",
        "field": "the book arts",
        "things": ["the pulp", "the mould and deckle", "the fibre length",
                   "sizing", "the drying loft", "the watermark"],
        "people": ["papermaker", "bookbinder", "conservator"],
        "places": ["the mill towns", "the river workshops", "the archive stores"],
        "adjectives": ["textured", "durable", "pale"],
        "facts": [
            "Paper is a mat of plant fibres that have been beaten in water until they bond when "
            "dried.",
            "The papermaker dips a screen called a mould into a vat of pulp and lifts out an "
            "even layer of fibres.",
            "A removable frame, the deckle, keeps the pulp from running off the edges and gives "
            "handmade sheets their feathered borders.",
            "Fresh sheets are pressed between felts to squeeze out water before they are hung "
            "to dry.",
            "Sizing with gelatine or starch stops ink from spreading into the fibres.",
            "A watermark is made by sewing a wire design onto the mould, which leaves the paper "
            "thinner along its lines.",
            "Paper made from long rag fibres without acid can last for many centuries.",
        ],
    },
    {
        "topic": "volcanic islands",
        "field": "volcanology",
        "things": ["the magma chamber", "the lava flows", "the caldera",
                   "the ash layers", "erosion by the sea", "the hot spot"],
        "people": ["volcanologist", "islander", "geologist"],
        "places": ["the black sand beaches", "the crater rim", "the younger lava fields"],
        "adjectives": ["rugged", "steaming", "young"],
        "facts": [
            "Some island chains form as a plate drifts over a fixed hot spot in the mantle, "
            "each island older than the one beside it.",
            "Runny basalt lava builds broad shield volcanoes with gentle slopes.",
            "When the magma beneath a volcano drains away, the summit can collapse into a wide "
            "basin called a caldera.",
            "Fresh lava is barren at first, but ferns and lichens colonise it within a few "
            "years.",
            "Waves attack the edges of old islands until only a ring of reef marks where they "
            "once stood.",
            "Instruments on the slopes measure tiny swellings of the ground that can warn of a "
            "coming eruption.",
            "Weathered volcanic soil is often remarkably fertile.",
        ],
    },
    {
        "topic": "desert plants",
        "field": "botany",
        "things": ["water storage", "the root spread", "the waxy cuticle",
                   "night-time gas exchange", "the spines", "seed dormancy"],
        "people": ["botanist", "gardener", "ranger"],
        "places": ["the dry washes", "the gravel plains", "the canyon floors"],
        "adjectives": ["hardy", "sparse", "sun-baked"],
        "facts": [
            "Many desert plants open their pores only at night, when cooler air means less water "
            "is lost.",
            "A cactus stores water in swollen stems that can expand like an accordion after "
            "rain.",
            "Spines shade the surface of the plant and discourage animals that would chew into "
            "its moist tissue.",
            "Shallow, wide roots catch the water of brief showers before it evaporates.",
            "Some annuals spend years as seeds in the soil and flower all at once after a rare "
            "heavy rain.",
            "A waxy coating on leaves and stems slows the loss of water to the dry air.",
            "Desert shrubs are often spaced evenly, each claiming the water in the soil around "
            "it.",
        ],
    },
    {
        "topic": "railway signalling",
        "field": "transport engineering",
        "things": ["the block sections", "the interlocking", "the track circuits",
                   "braking distance", "the signal aspects", "the points"],
        "people": ["signaller", "driver", "engineer"],
        "places": ["the junction boxes", "the main line", "the branch lines"],
        "adjectives": ["cautious", "methodical", "reliable"],
        "facts": [
            "The line is divided into blocks, and only one train is allowed in a block at a "
            "time.",
            "An interlocking prevents a signaller from setting a signal to clear unless the "
            "points ahead are set and locked correctly.",
            "Track circuits detect a train because its wheels and axles connect the two rails "
            "electrically.",
            "A signal showing caution warns the driver that the next signal may be at danger.",
            "Heavier and faster trains need longer distances to stop, which sets the spacing of "
            "signals.",
            "Older lines were worked by levers in signal boxes, each lever connected by rods or "
            "wires to the equipment it moved.",
            "Modern control centres supervise hundreds of kilometres of line from a single room.",
        ],
    },
    {
        "topic": "fungal networks in woodland soil",
        "field": "soil ecology",
        "things": ["the hyphae", "the root tips", "the leaf litter",
                   "the exchange of sugars", "soil moisture", "the fruiting bodies"],
        "people": ["ecologist", "forester", "mycologist"],
        "places": ["the old beech woods", "the pine plantations", "the shaded ravines"],
        "adjectives": ["hidden", "damp", "tangled"],
        "facts": [
            "Most of a fungus lives underground as a web of threads far finer than a human hair.",
            "Many trees trade sugars with fungi that wrap their roots, receiving water and "
            "minerals in return.",
            "The mushrooms that appear in autumn are only the short-lived fruiting bodies of a "
            "much larger organism.",
            "Fungi are the main recyclers of fallen wood, breaking down tough compounds that "
            "few other organisms can digest.",
            "A single handful of forest soil can contain kilometres of fungal threads.",
            "Seedlings growing in deep shade may draw support from the network linked to larger "
            "trees.",
            "Disturbing the soil with heavy machinery can break these networks for years.",
        ],
    },
    {
        "topic": "wind turbines",
        "field": "energy engineering",
        "things": ["the blade pitch", "the gearbox", "wind shear",
                   "the tower height", "the cut-out speed", "the wake behind each rotor"],
        "people": ["technician", "engineer", "planner"],
        "places": ["the coastal ridges", "the offshore banks", "the open farmland"],
        "adjectives": ["towering", "steady", "graceful"],
        "facts": [
            "The power in the wind rises with the cube of its speed, so a small increase in "
            "wind makes a large difference in output.",
            "Taller towers reach steadier and faster winds above the turbulence near the ground.",
            "Turbines turn their blades to spill wind when it blows too hard, and shut down "
            "entirely in storms.",
            "Each turbine leaves a wake of slower, churned air, so they are spaced several "
            "rotor widths apart.",
            "Technicians climb the towers to service the machinery inside the nacelle at the "
            "top.",
            "Offshore sites enjoy stronger and more regular winds, but building there costs "
            "more.",
            "No turbine can capture all the energy in the wind, since the air must keep moving "
            "through the rotor.",
        ],
    },
    {
        "topic": "weather fronts",
        "field": "meteorology",
        "things": ["the pressure gradient", "the cloud sequence", "the dew point",
                   "the wind shift", "the warm sector", "the rain band"],
        "people": ["forecaster", "meteorologist", "sailor"],
        "places": ["the coastal plains", "the western hills", "the inland valleys"],
        "adjectives": ["restless", "grey", "blustery"],
        "facts": [
            "A front is the boundary between two air masses of different temperature and "
            "humidity.",
            "Ahead of a warm front, high thin cloud thickens and lowers over many hours before "
            "steady rain arrives.",
            "A cold front pushes under warmer air like a wedge and often brings a short burst "
            "of heavy showers.",
            "When a front passes, the wind usually changes direction and the air feels "
            "different almost at once.",
            "Forecasters watch the barometer, since falling pressure often announces an "
            "approaching system.",
            "Fronts are drawn on weather maps as lines with triangles or half circles pointing "
            "the way they move.",
            "Hills force moist air to rise, so the windward slopes receive far more rain than "
            "the sheltered side.",
        ],
    },
    {
        "topic": "map making",
        "field": "cartography",
        "things": ["the projection", "the contour interval", "the survey triangles",
                   "the scale bar", "place names", "the legend"],
        "people": ["cartographer", "surveyor", "walker"],
        "places": ["the county archives", "the survey office", "the hill summits"],
        "adjectives": ["careful", "detailed", "practical"],
        "facts": [
            "No flat map can show the curved surface of the earth without distorting shapes, "
            "areas or distances.",
            "Surveyors once measured a single baseline with great care and then built a network "
            "of triangles from it.",
            "Contour lines join points of equal height, so closely spaced lines mean a steep "
            "slope.",
            "Every map is a selection, and what the mapmaker leaves out matters as much as what "
            "is drawn.",
            "Place names on old maps record local speech that has sometimes since disappeared.",
            "A map's scale tells how far the ground distance is for each unit on the page.",
            "Satellite positioning has replaced much field survey, but local checks are still "
            "needed.",
        ],
    },
    {
        "topic": "coral reefs",
        "field": "marine biology",
        "things": ["the reef crest", "water clarity", "the algae living in the coral",
                   "spawning", "the lagoon floor", "wave energy"],
        "people": ["diver", "reef scientist", "fisher"],
        "places": ["the outer slopes", "the sheltered lagoons", "the shallow flats"],
        "adjectives": ["colourful", "teeming", "fragile"],
        "facts": [
            "Reef-building corals are colonies of small animals that lay down skeletons of "
            "limestone.",
            "Tiny algae living inside the coral provide much of its food through "
            "photosynthesis, which is why reefs need clear, sunlit water.",
            "When the water stays too warm for too long, corals expel their algae and turn "
            "white.",
            "Many corals release eggs and sperm on the same few nights of the year, timed by "
            "the moon.",
            "Reefs break the force of ocean waves and protect the coasts behind them.",
            "Parrotfish grind coral as they feed and produce much of the fine white sand of "
            "tropical beaches.",
            "A healthy reef supports thousands of species in a small area.",
        ],
    },
    {
        "topic": "glassblowing",
        "field": "decorative arts",
        "things": ["the furnace", "the gather of molten glass", "the annealing oven",
                   "the blowpipe", "the cooling rate", "the colour rods"],
        "people": ["glassblower", "apprentice", "gaffer"],
        "places": ["the glass studios", "the harbour workshops", "the old glassworks"],
        "adjectives": ["glowing", "fluid", "exacting"],
        "facts": [
            "Glass is worked at temperatures where it flows like thick honey and stiffens "
            "within moments as it cools.",
            "The glassblower gathers a blob of molten glass on the end of a hollow pipe and "
            "blows a bubble into it.",
            "The piece is turned constantly so that gravity does not pull it out of shape.",
            "Finished pieces are cooled slowly in an annealing oven to relieve internal stress.",
            "Glass that cools too quickly can crack days later without any warning.",
            "Colour comes from small amounts of metal compounds melted into the batch.",
            "Large pieces are made by a team, with the lead worker directing the assistants in "
            "a rehearsed sequence.",
        ],
    },
    {
        "topic": "fruit orchards",
        "field": "horticulture",
        "things": ["the rootstock", "the grafting union", "pollination",
                   "winter pruning", "the blossom", "the thinning of fruit"],
        "people": ["grower", "grafter", "gardener"],
        "places": ["the walled gardens", "the south-facing slopes", "the old farm orchards"],
        "adjectives": ["blossoming", "sheltered", "productive"],
        "facts": [
            "Apple varieties do not come true from seed, so growers propagate them by grafting.",
            "The rootstock controls how large the tree grows, while the grafted shoot decides "
            "the fruit.",
            "Most apple trees need pollen from a different variety flowering at the same time.",
            "Pruning in winter shapes the tree and lets light reach the centre of the crown.",
            "Thinning the young fruit gives larger apples and stops the tree from bearing only "
            "every other year.",
            "A late frost during blossom can ruin a season's crop in a single night.",
            "Old orchards often hold local varieties that are found nowhere else.",
        ],
    },
    {
        "topic": "salt marshes",
        "field": "coastal ecology",
        "things": ["the tidal creeks", "the marsh grasses", "sediment trapping",
                   "the high-water mark", "the mudflats", "the pans"],
        "people": ["warden", "birdwatcher", "ecologist"],
        "places": ["the estuary edges", "the sheltered bays", "the sea walls"],
        "adjectives": ["flat", "tidal", "wind-swept"],
        "facts": [
            "Salt marshes grow in sheltered places where the tide floods gently over mud.",
            "Marsh plants slow the water, letting fine sediment settle and raising the ground "
            "a little each year.",
            "A branching network of creeks carries the tide in and out of the marsh.",
            "Only plants that tolerate salt can live there, and each grows at its own height "
            "above the tide.",
            "Marshes absorb the energy of storm waves and protect the land behind them.",
            "Wading birds feed on the mudflats at low tide and roost on the marsh at high tide.",
            "Where sea walls block the marsh from moving inland, it can be squeezed away as the "
            "sea rises.",
        ],
    },
    {
        "topic": "public libraries",
        "field": "information science",
        "things": ["the catalogue", "the classification scheme", "the reading rooms",
                   "the reserve stacks", "interlibrary loans", "the reference desk"],
        "people": ["librarian", "reader", "archivist"],
        "places": ["the town centres", "the university quarter", "the branch libraries"],
        "adjectives": ["quiet", "well-ordered", "welcoming"],
        "facts": [
            "A classification scheme gives each book a place on the shelf next to others on "
            "the same subject.",
            "Before computers, catalogues were kept on cards filed in long wooden drawers.",
            "Libraries lend books to one another so that a reader can borrow titles their own "
            "branch does not hold.",
            "Reference librarians are trained to find out what a reader actually needs, which "
            "is not always what they first ask.",
            "Fragile or rare items are kept in closed stacks and read under supervision.",
            "Many libraries began as private collections opened to the public by subscription.",
            "Today's libraries lend digital books and offer study space as well as printed "
            "volumes.",
        ],
    },
    {
        "topic": "limestone caves",
        "field": "karst science",
        "things": ["the dripstone", "the underground streams", "the cave air",
                   "the water table", "the sinkholes", "the passage shapes"],
        "people": ["caver", "geologist", "guide"],
        "places": ["the karst plateaus", "the gorge walls", "the spring heads"],
        "adjectives": ["cool", "echoing", "dripping"],
        "facts": [
            "Rainwater picks up carbon dioxide from the soil and becomes weakly acidic, enough "
            "to dissolve limestone slowly.",
            "Over hundreds of thousands of years, water widens cracks in the rock into passages "
            "and chambers.",
            "Stalactites grow downward from the ceiling as dripping water leaves behind a thin "
            "film of calcite.",
            "Stalagmites rise from the floor where the drops land, and the two sometimes meet "
            "as a column.",
            "Cave air stays at nearly the same temperature all year, close to the average for "
            "the region above.",
            "Streams on limestone country often vanish into sinkholes and reappear as springs "
            "far away.",
            "Growth layers in dripstone record past rainfall, much as tree rings do.",
        ],
    },
    {
        "topic": "radio broadcasting",
        "field": "telecommunications",
        "things": ["the carrier frequency", "the antenna height", "the ionosphere",
                   "modulation", "interference", "the transmitter power"],
        "people": ["broadcast engineer", "announcer", "listener"],
        "places": ["the transmitter masts", "the studio buildings", "the remote valleys"],
        "adjectives": ["crackling", "far-reaching", "clear"],
        "facts": [
            "A radio station sends its signal by varying a steady carrier wave in strength or "
            "in frequency.",
            "Frequency modulation resists crackle from electrical noise better than amplitude "
            "modulation.",
            "At night, certain frequencies bounce off the upper atmosphere and can be heard "
            "hundreds of kilometres away.",
            "Higher frequencies travel mostly in straight lines, so hills and buildings cast "
            "radio shadows.",
            "Transmitter masts are built tall so that the signal clears the horizon.",
            "Stations on nearby frequencies are kept far apart to avoid interfering with one "
            "another.",
            "Early broadcasts were often heard on simple crystal sets that needed no battery.",
        ],
    },
    {
        "topic": "garden compost",
        "field": "soil science",
        "things": ["the carbon to nitrogen balance", "aeration", "the heap temperature",
                   "moisture", "the worms", "the finished humus"],
        "people": ["gardener", "grower", "allotment holder"],
        "places": ["the community gardens", "the market gardens", "the back yards"],
        "adjectives": ["earthy", "crumbly", "warm"],
        "facts": [
            "Compost is organic matter broken down by microbes, fungi and small animals into a "
            "dark, crumbly material.",
            "A heap works best with a mix of green material rich in nitrogen and brown material "
            "rich in carbon.",
            "A large, well mixed heap can heat up enough to kill many weed seeds.",
            "Turning the heap lets air in and speeds up decomposition.",
            "A heap that is too wet turns sour and smelly, while one that is too dry barely "
            "changes.",
            "Earthworms move into the cooler outer parts of the heap and finish the work.",
            "Spread on beds, compost improves the structure of the soil and helps it hold "
            "water.",
        ],
    },
    {
        "topic": "suspension bridges",
        "field": "structural engineering",
        "things": ["the main cables", "the anchorages", "the deck stiffness",
                   "wind loading", "the towers", "the hangers"],
        "people": ["engineer", "inspector", "rigger"],
        "places": ["the estuary crossings", "the deep gorges", "the harbour mouths"],
        "adjectives": ["elegant", "slender", "tensioned"],
        "facts": [
            "In a suspension bridge the deck hangs from vertical hangers attached to two great "
            "cables.",
            "The cables pass over tall towers and are fixed into massive anchorages at each "
            "end.",
            "Because the cables work in tension, the bridge can span distances that no beam "
            "could cross.",
            "Wind can set a light deck swaying, so engineers test models in wind tunnels before "
            "building.",
            "Main cables are spun on site from thousands of parallel steel wires.",
            "Inspectors check the cables for corrosion, since moisture trapped inside can weaken "
            "the wires unseen.",
            "Deck sections are often lifted into place from barges and hung one after another.",
        ],
    },
    {
        "topic": "tea growing",
        "field": "agronomy",
        "things": ["the plucking round", "the altitude", "withering",
                   "the bush height", "the monsoon rains", "oxidation"],
        "people": ["tea grower", "plucker", "taster"],
        "places": ["the terraced estates", "the misty highlands", "the factory floors"],
        "adjectives": ["green", "terraced", "aromatic"],
        "facts": [
            "Tea comes from the young leaves and buds of an evergreen shrub kept pruned to "
            "waist height.",
            "Pluckers take only the top two leaves and a bud, returning to each bush every week "
            "or two.",
            "Tea grown at high altitude grows slowly and is prized for its delicate flavour.",
            "Freshly picked leaves are spread out to wither, which makes them soft enough to "
            "roll.",
            "Letting the rolled leaves react with air darkens them; green tea is heated early "
            "to prevent this.",
            "Tasters judge each batch by its appearance, aroma and the colour of the brewed "
            "liquor.",
            "Terraces cut into steep hillsides keep the soil from washing away in heavy rain.",
        ],
    },
    {
        "topic": "hand loom weaving",
        "field": "textile craft",
        "things": ["the warp", "the weft", "the heddles",
                   "the shed", "the beater", "the tension"],
        "people": ["weaver", "spinner", "dyer"],
        "places": ["the weaving sheds", "the cottage workshops", "the mill villages"],
        "adjectives": ["rhythmic", "even", "colourful"],
        "facts": [
            "Weaving interlaces two sets of threads at right angles: the warp running lengthwise "
            "and the weft across.",
            "Heddles lift some warp threads and not others, opening a gap called the shed for "
            "the shuttle to pass through.",
            "After each pass the weaver beats the weft firmly into place.",
            "Different lifting orders produce plain weave, twill or more elaborate patterns.",
            "Keeping the warp under even tension is essential for a flat cloth.",
            "Setting up the loom, with hundreds of threads to measure and tie, can take longer "
            "than the weaving itself.",
            "Natural dyes from roots, bark and leaves give colours that soften gracefully with "
            "age.",
        ],
    },
    {
        "topic": "street trees",
        "field": "urban forestry",
        "things": ["the root space", "the canopy cover", "soil compaction",
                   "summer shade", "the pruning cycle", "species diversity"],
        "people": ["arborist", "planner", "resident"],
        "places": ["the city avenues", "the suburban streets", "the market squares"],
        "adjectives": ["leafy", "shady", "resilient"],
        "facts": [
            "Trees cool streets in summer through their shade and the water they release from "
            "their leaves.",
            "Compacted soil under pavements leaves roots short of air and water.",
            "Planners now leave larger pits and connected trenches of loose soil for new trees.",
            "Planting many different species protects a city from losing most of its trees to "
            "a single disease.",
            "Arborists prune young trees to build a strong structure and avoid larger cuts "
            "later.",
            "Tree canopies slow rainwater, easing the load on drains during storms.",
            "Large mature trees provide far more benefit than the same number of small ones.",
        ],
    },
]  # fmt: skip

OPENERS = [
    "Consider {topic}.",
    "The study of {topic} belongs to {field}, but it draws on many neighbouring subjects.",
    "When people talk about {topic}, they usually begin with {thing}.",
    "It is hard to understand {topic} without first looking at {thing}.",
    "Anyone who has spent a season around {places} will have opinions about {topic}.",
    "The story of {topic} is older than most people assume.",
    "Among the subjects of {field}, few are as approachable as {topic}.",
    "There is a practical side to {topic} as well as a scientific one.",
    "Turn now to {topic}, a subject that rewards close attention.",
    "A short description of {topic} has to start somewhere, and {thing} is as good a place as any.",
]

TEMPLATES = [
    "Anyone who spends time around {topic} soon learns that {thing} matters more than it first "
    "appears.",
    "In the {century} century, {person}s began to keep careful notes about {thing}, and some "
    "of those notes are still consulted.",
    "The link between {thing} and {thing2} is one of the first things a student of {field} is "
    "asked to explain.",
    "Much of what is known about {topic} comes from patient observation rather than from "
    "dramatic experiments.",
    "A common mistake is to treat {thing} as fixed, when in practice it changes from {season} "
    "to {season2}.",
    "Measurements taken over {number} years show a slow but steady shift in {thing}.",
    "{Person}s often describe the work as {adjective}, though few would trade it for anything "
    "else.",
    "It is worth pausing to ask why {thing} behaves the way it does.",
    "How much {thing} matters, as so often in {field}, depends on scale.",
    "At small scales {thing} dominates; at larger scales {thing2} takes over.",
    "Visitors to {places} are sometimes surprised by how {adjective} everything looks up close.",
    "Textbooks tend to simplify the story of {topic}, but the details are where the interest lies.",
    "One experienced {person} put it simply: understand {thing}, and the rest follows.",
    "There is no single correct method, and experienced {person}s disagree about the finer points.",
    "The history of {topic} is full of small improvements rather than sudden breakthroughs.",
    "Local traditions around {places} preserved techniques that were forgotten elsewhere.",
    "Modern instruments make it easier to measure {thing}, yet the basic principles are unchanged.",
    "What looks like disorder is usually a balance between competing pressures.",
    "In many regions, {topic} also shaped the way communities organised their year.",
    "A careful observer will notice that {thing} and {thing2} rarely change at the same pace.",
    "Over {number} generations the practice spread along trade routes and river valleys.",
    "The cost of getting {thing} wrong is rarely immediate, which is why the lesson is so often "
    "learned again.",
    "Guides written for beginners usually start with {thing}, and with good reason.",
    "Few subjects reward patience quite as generously as {topic}.",
    "Seen from a distance, {topic} can look simple; seen closely, it is anything but.",
    "Records kept near {places} give one of the longest continuous accounts of {thing}.",
    "The {season} months bring their own difficulties, mostly to do with {thing}.",
    "Researchers in {field} now use computer models to test ideas about {thing2} that were "
    "once pure speculation.",
    "Even so, the models are only as good as the field measurements that feed them.",
    "It would be wrong to say the matter is settled.",
    "Each generation of {person}s has added its own refinements.",
    "Questions about {thing} lead naturally to questions about {thing2}.",
    "Whenever {thing} changes, everything else has to adapt.",
    "In older accounts, {thing} is described in terms that modern readers find charmingly vague.",
    "The same principle appears, in different clothing, in several other fields.",
    "Small differences in {thing} can add up to large differences over a decade.",
    "A good rule of thumb is to watch {thing} first and worry about {thing2} later.",
    "That, at least, is the conventional view.",
    "Some {person}s argue that the conventional view gives too little weight to {thing}.",
    "The debate is not merely academic, since decisions about {places} depend on it.",
    "Practical guides recommend checking {thing} at least once every {number} days during the "
    "busy season.",
    "There are exceptions, of course, and they are often the most instructive cases.",
    "Without attention to {thing}, the whole system would slowly drift out of balance.",
    "A walk around {places} makes the point better than any diagram.",
    "What matters most is not any single factor but the way {thing} and {thing2} interact.",
    "The vocabulary of {field} reflects this, with separate words for conditions an outsider "
    "would lump together.",
    "Training a new {person} takes years, largely because so much of the skill concerns {thing}.",
    "The result is a system that is robust in ordinary years and fragile in extreme ones.",
    "For this reason, long records are valued more highly than short, precise ones.",
    "By the end of the {century} century, most of the basic methods were in place.",
    "Surveys around {places} found that {thing} varied more than anyone had expected.",
    "This variation is not noise; it is part of what makes {topic} so resilient.",
    "People who live near {places} speak of {thing} with a mixture of respect and familiarity.",
    "The scene may look {adjective}, but it hides a great deal of careful work.",
    "Ask any {person} about {thing2} and you may hear a long and detailed answer.",
    "The numbers vary from place to place, but the pattern is remarkably consistent.",
    "In a dry year the picture looks quite different.",
    "The same questions were being asked {number} years ago, if in plainer language.",
    "Much depends on the weather in {season}, which no one can plan for with certainty.",
    "Good practice here is mostly a matter of noticing small changes early.",
]

CENTURIES = ["sixteenth", "seventeenth", "eighteenth", "nineteenth", "twentieth"]
SEASONS = ["spring", "summer", "autumn", "winter"]
NUMBERS = ["three", "five", "seven", "ten", "twelve", "twenty", "thirty", "forty", "fifty"]


def _sentence(template: str, topic: dict, rng: random.Random) -> str:
    thing, thing2 = rng.sample(topic["things"], 2)
    season, season2 = rng.sample(SEASONS, 2)
    person = rng.choice(topic["people"])
    text = template.format(
        topic=topic["topic"],
        field=topic["field"],
        thing=thing,
        thing2=thing2,
        person=person,
        Person=person[0].upper() + person[1:],
        places=rng.choice(topic["places"]),
        adjective=rng.choice(topic["adjectives"]),
        century=rng.choice(CENTURIES),
        season=season,
        season2=season2,
        number=rng.choice(NUMBERS),
    )
    return text[0].upper() + text[1:]


class _Deck:
    """Draws items in shuffled order without repeats until all are used, then reshuffles."""

    def __init__(self, items: list[str], rng: random.Random):
        self.items, self.rng, self.left = items, rng, []

    def draw(self, n: int) -> list[str]:
        out = []
        for _ in range(n):
            if not self.left:
                # Leave out what this draw already took, so one paragraph never repeats.
                self.left = [x for x in self.items if x not in out]
                self.rng.shuffle(self.left)
            out.append(self.left.pop())
        return out


def _paragraph(topic: dict, facts: _Deck, templates: _Deck, rng: random.Random) -> str:
    opener = _sentence(rng.choice(OPENERS), topic, rng)
    body = facts.draw(rng.randint(2, 4))
    body += [_sentence(t, topic, rng) for t in templates.draw(rng.randint(3, 5))]
    rng.shuffle(body)
    return " ".join([opener, *body])


def make_haystack(target_bytes: int = TARGET_BYTES, seed: int = SEED) -> str:
    """Paragraphs about shuffled topics, a few in a row per topic, until target_bytes."""
    rng = random.Random(seed)
    # Decks keep a run of paragraphs on one topic from repeating a sentence.
    templates = _Deck(TEMPLATES, rng)
    facts = {t["topic"]: _Deck(t["facts"], rng) for t in TOPICS}
    paragraphs: list[str] = []
    size = 0
    while size < target_bytes:
        order = TOPICS[:]
        rng.shuffle(order)
        for topic in order:
            for _ in range(rng.randint(2, 3)):
                paragraph = _paragraph(topic, facts[topic["topic"]], templates, rng)
                paragraphs.append(paragraph)
                size += len(paragraph.encode("utf-8")) + 2
            if size >= target_bytes:
                break
    return "\n\n".join(paragraphs) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="compare with the shipped file")
    args = parser.parse_args()
    text = make_haystack()
    words = set(re.findall(r"[a-z]+", text.lower()))
    clash = sorted(words & set(FORBIDDEN))
    if clash:
        print(f"haystack contains needle words {clash}; reword the topics", file=sys.stderr)
        return 1
    if args.check:
        same = OUT.exists() and OUT.read_text(encoding="utf-8") == text
        print("haystack.txt is up to date" if same else "haystack.txt differs; rerun the script")
        return 0 if same else 1
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(text, encoding="utf-8")
    print(f"wrote {OUT} ({len(text.encode('utf-8')):,} bytes, {len(text.split()):,} words)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
