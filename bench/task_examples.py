"""Tasks (3 examples and a description each) and unseen prompts, shared by the classifier test
and bench."""

TASKS = {
    "code": {
        "description": (
            "programming, writing or fixing source code, software bugs, errors, "
            "functions, scripts, APIs, SQL queries, git"
        ),
        "examples": [
            "Write a Python function that reverses a linked list.",
            "Why does my JavaScript fetch call return undefined?",
            "Refactor this SQL query to use a join instead of a subquery.",
        ],
    },
    "math": {
        "description": (
            "arithmetic, algebra, calculus, equations, "
            "probability, statistics, geometry, proofs, numbers"
        ),
        "examples": [
            "What is the integral of x squared from 0 to 3?",
            "Solve for x: 3x + 7 = 22.",
            "Prove that the square root of 2 is irrational.",
        ],
    },
    "summarize": {
        "description": (
            "condense or shorten a text, article, "
            "notes or report into its key points, a brief summary"
        ),
        "examples": [
            "Summarize this article in three bullet points.",
            "Give me a short summary of the meeting notes below.",
            "TL;DR of the following report, please.",
        ],
    },
    "translate": {
        "description": (
            "translation from one language into another, how to say a phrase in French, "
            "Spanish, German, Japanese"
        ),
        "examples": [
            "Translate 'good morning, how are you?' into Spanish.",
            "How do you say 'thank you very much' in Japanese?",
            "Translate this paragraph from German to English.",
        ],
    },
    "extraction": {
        "description": (
            "pull structured fields, names, "
            "dates, numbers, emails out of a document into JSON or a table"
        ),
        "examples": [
            "Extract all email addresses from the text below.",
            "List the company names and dates mentioned in this contract as JSON.",
            "Pull out the invoice number, total and due date from this invoice.",
        ],
    },
    "chat": {
        "description": (
            "casual conversation, small talk, feelings, recommendations, opinions, everyday advice"
        ),
        "examples": [
            "Hi! How is your day going?",
            "Can you recommend a good book for a long flight?",
            "I'm feeling a bit stressed about work, any advice?",
        ],
    },
}

UNSEEN = [
    ("code", "How do I sort a dictionary by value in Python?"),
    ("code", "Fix the bug in this C function that segfaults when the array is empty."),
    ("code", "Write a bash script that renames every .txt file in a folder."),
    ("math", "What is the derivative of sin(x) * e^x?"),
    ("math", "If a train travels 120 km in 1.5 hours, what is its average speed?"),
    ("math", "Calculate the probability of rolling two sixes with two dice."),
    ("summarize", "Condense the following blog post into one paragraph."),
    ("summarize", "Can you sum up the key points of this research paper abstract?"),
    ("summarize", "Briefly recap what happened in the chapter I pasted below."),
    ("translate", "Please translate 'where is the train station' into French."),
    ("translate", "What is the Italian translation of 'I love this city'?"),
    ("translate", "Render this English sentence in Portuguese: the weather is nice today."),
    (
        "extraction",
        "From the resume below, extract the candidate's skills and years of experience.",
    ),
    ("extraction", "Find every phone number in this customer support transcript."),
    ("extraction", "Return the product names and prices from this receipt as a table."),
    ("chat", "What's a fun thing to do on a rainy weekend?"),
    ("chat", "Tell me something interesting about octopuses."),
    ("chat", "Good evening! I just got back from a trip to the mountains."),
]
